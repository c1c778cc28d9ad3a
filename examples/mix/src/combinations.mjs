/**
 * The arms of examples/mix: cross-paper combinations built only from the shared contracts of
 * `@regkit/core` (RegistrationModel, Similarity, FeatureExtractor) with `trainRegistration`
 * (FIRE through `trainFire`, a thin wrapper that adds its three Adam rates) and
 * `registerImages`, each beside its parent method at the same budget.
 *
 * Every trained arm is `train({ value, seed, data, epochs, stepsPerEpoch, masr, warmData })`
 * → `{ register(moving, fixed) → { forward, … }, dispose(), model, similarity }`: `value` is
 * the arm's weight from its grid, `data(epoch, step)` → `{ moving, fixed }` the training
 * pairs, `masr` the frozen MASR-Net (a FeatureExtractor), `warmData(i)` the unregistered pairs
 * of the MINE warm start, `onInit(model, similarity)` an optional hook called after building,
 * before training. Instance-optimisation arms return `{ register, options }` (no training).
 */
import { tf } from '@regkit/core';
import {
  localNccLoss,
  MineEstimator,
  mindLoss,
  mutualInformationLoss,
  smoothedCosineLoss,
} from '@regkit/losses';
import {
  createFire,
  createSitreg,
  createVoxelMorph,
  trainFire,
  trainRegistration,
} from '@regkit/networks';
import { dnsRegistrationOptions, registerImages } from '@regkit/register';

/** Adam of the SITReg arms (lr 1e-3, β1 0.9, β2 0.999). */
export const ADAM = Object.freeze({ learningRate: 1e-3, beta1: 0.9, beta2: 0.999 });
/**
 * Adam of the VoxelMorph arms (lr 3e-3, β1 0.9, β2 0.999), parents and mix alike. VoxelMorph
 * (U-Net, PyTorch-default initialisation, flow convolution N(0, 10⁻⁵)) learns slowly from
 * scratch: on the protocol's 64×64 T1 → FLAIR pairs (seed 1, Parzen MI, α = 1) it stays at the
 * identity's validation Dice (58.2) after 50 steps at any of lr 1e-3 / 3e-3, α 1–1000, flow
 * std 10⁻³ / 10⁻², He initialisation (lr 1e-2 diverges), falls below it at 100 steps and
 * leaves it upwards at 200 steps: 58.8 (lr 1e-3), 65.1 (lr 3e-3); DNS at lr 3e-3: 66.0.
 * `src/diagnose-voxelmorph.mjs` reproduces this; the README has the figures.
 */
export const VOXELMORPH_ADAM = Object.freeze({ learningRate: 3e-3, beta1: 0.9, beta2: 0.999 });
/** FIRE's three Adam rates, the paper's × 10 (as examples/fire: 1e-4 is too slow for a few hundred steps). */
export const FIRE_RATES = Object.freeze({ affine: 1e-4, nonRigid: 5e-4, synthesis: 1e-3 });
/** The small SITReg of examples/sitreg (channels × 0.25). */
export const SITREG_WIDTH = 0.25;
/** The small FIRE of examples/fire (channels × 0.125, 2 residual blocks). */
export const FIRE_OPTIONS = Object.freeze({ ndim: 2, width: 0.125, residualBlocks: 2 });
/** Adam rate of the MINE warm start (the statistics network alone), as examples/mine. */
export const MINE_WARM_LR = 1e-2;
/** The instance optimiser's shared budget: 3 levels, the DNS paper's iterations, displacement, no affine. */
export const IO_COMMON = Object.freeze({
  affine: false,
  transform: 'displacement',
  fieldDownsample: 1,
  levels: 3,
  iterations: [100, 80, 50],
  returnVelocity: false,
});

/**
 * The DNS similarity of a frozen feature extractor: smoothed cosine (σ = 1, the paper's Eq. 5)
 * of `features(fixed)` and `features(warped)`, as a plain `SimilarityLoss`. The extractor's
 * weights are not a Module handed to the trainer, so they stay frozen.
 */
export function dnsSimilarity(features, { sigma = 1 } = {}) {
  return (fixed, moving) =>
    tf.tidy(() => smoothedCosineLoss(features.apply(fixed), features.apply(moving), { sigma }));
}

/**
 * A MINE-local statistics network (N = 8, L = 30, as examples/mine) trained alone for
 * `steps` unregistered pairs `warmData(i)` with its own Adam (lr {@link MINE_WARM_LR}) to
 * maximise the MI bound (unsupervised). Returns the estimator and the mean estimate (nats)
 * on 4 pairs before and after.
 */
export function warmStartedMine({ seed, steps, warmData }) {
  const estimator = new MineEstimator({
    shuffle: 'local',
    neighbourhood: 8,
    features: 30,
    channelsA: 1,
    channelsB: 1,
    seed,
  });
  const estimate = () => {
    let sum = 0;
    for (let i = 0; i < 4; i++) {
      const p = warmData(1_000_000 + i);
      sum += tf.tidy(() => estimator.estimate(p.fixed, p.moving).dataSync()[0]);
      tf.dispose([p.moving, p.fixed]);
    }
    return sum / 4;
  };
  const before = estimate();
  const optimiser = tf.train.adam(MINE_WARM_LR);
  for (let i = 0; i < steps; i++) {
    const p = warmData(i);
    tf.tidy(() => {
      optimiser.minimize(
        () => estimator.loss(p.fixed, p.moving),
        false,
        estimator.trainableVariables,
      );
    });
    tf.dispose([p.moving, p.fixed]);
  }
  optimiser.dispose();
  return { estimator, before, after: estimate() };
}

/** The trained model as an arm's result; `extra` is disposed with it. */
const trained = (model, register, extra = [], similarity = undefined) => ({
  model,
  similarity,
  register,
  dispose: () => {
    model.dispose();
    for (const e of extra) e.dispose();
  },
});

/** The similarity of a SITReg / VoxelMorph arm: a loss, or a trainable module. */
function similarityOf(kind, { masr, seed, warmSteps, warmData, log }) {
  switch (kind) {
    case 'lncc':
      // SITReg's own: LNCC window 7 (what its trainingLoss uses when given none)
      return { similarity: undefined };
    case 'ncc':
      return { similarity: (f, w) => localNccLoss(f, w, { window: 9 }) };
    case 'mi':
      return { similarity: (f, w) => mutualInformationLoss(f, w) };
    case 'mind':
      return { similarity: (f, w) => mindLoss(f, w) };
    case 'dns':
      return { similarity: dnsSimilarity(masr) };
    case 'mine': {
      const w = warmStartedMine({ seed, steps: warmSteps, warmData });
      log?.({ seed, before: w.before, after: w.after });
      return { similarity: w.estimator, extra: [w.estimator] };
    }
    default:
      throw new Error(`unknown similarity '${kind}'`);
  }
}

/** A SITReg arm trained with `trainRegistration` and similarity `kind` (α = value). */
export const sitregArm =
  (kind) =>
  async ({
    value,
    seed,
    data,
    epochs,
    stepsPerEpoch,
    masr,
    warmSteps = 0,
    warmData,
    log,
    onInit,
  }) => {
    const model = createSitreg({ ndim: 2, width: SITREG_WIDTH, seed });
    const sim = similarityOf(kind, { masr, seed, warmSteps, warmData, log });
    onInit?.(model, sim.similarity);
    await trainRegistration({
      model,
      similarity: sim.similarity,
      similarityWeight: value,
      ...ADAM,
      epochs,
      stepsPerEpoch,
      data,
    });
    return trained(model, (m, f) => model.apply(m, f), sim.extra, sim.similarity);
  };

/** A (diffeomorphic) VoxelMorph arm with similarity `kind` (α = value, diffusion weight 1). */
export const voxelmorphArm =
  (kind) =>
  async ({ value, seed, data, epochs, stepsPerEpoch, masr, onInit }) => {
    const model = createVoxelMorph({ ndim: 2, seed });
    const sim = similarityOf(kind, { masr, seed });
    onInit?.(model, sim.similarity);
    await trainRegistration({
      model,
      similarity: sim.similarity,
      similarityWeight: value,
      regularisationWeight: 1,
      ...VOXELMORPH_ADAM,
      epochs,
      stepsPerEpoch,
      data,
    });
    return trained(model, (m, f) => model.apply(m, f), sim.extra, sim.similarity);
  };

/**
 * A FIRE arm: its own loss with the registration-accuracy term the paper's RMS on
 * synthesised images (`kind` 'rms': no similarity given) or the DNS similarity of the warped
 * images ('dns'), weighted by `value`; `trainFire`'s three Adams at {@link FIRE_RATES}.
 */
export const fireArm =
  (kind) =>
  async ({ value, seed, data, epochs, stepsPerEpoch, masr, onInit }) => {
    const model = createFire({ ...FIRE_OPTIONS, seed });
    const similarity = kind === 'dns' ? dnsSimilarity(masr) : undefined;
    onInit?.(model, similarity);
    await trainFire({
      model,
      similarity,
      similarityWeight: value,
      learningRates: FIRE_RATES,
      beta1: ADAM.beta1,
      beta2: ADAM.beta2,
      epochs,
      stepsPerEpoch,
      data,
    });
    return trained(
      model,
      (m, f) =>
        tf.tidy(() => {
          const o = model.apply(m, f);
          return { forward: o.forward, inverse: o.inverse };
        }),
      [],
      similarity,
    );
  };

/**
 * An instance-optimisation arm (`registerImages`, {@link IO_COMMON}) with similarity `kind`:
 * 'dns' (the bundled MASR-Net features, `dnsRegistrationOptions`: smoothed cosine, the
 * paper's per-level rates and λ), 'mind' (MIND-SSC, MSE), 'mi' (Parzen MI). `value`
 * multiplies the regularisation weight (the method's default: DNS [0.6, 0.5, 0.4], MIND 1,
 * MI 2). `iterations` per level (default {@link IO_COMMON}'s). Deterministic apart from MI's
 * voxel sample, seeded by `seed`.
 */
export const instanceArm =
  (kind) =>
  async ({ value, seed, masr, size, iterations = IO_COMMON.iterations }) => {
    const options = (() => {
      if (kind === 'dns') {
        const o = dnsRegistrationOptions(size, masr);
        return { ...o, regularisationWeight: o.regularisationWeight.map((w) => w * value) };
      }
      if (kind === 'mind') return { similarity: 'mind', regularisationWeight: value };
      if (kind === 'mi') return { similarity: 'mi', regularisationWeight: 2 * value, seed };
      throw new Error(`unknown instance-optimisation similarity '${kind}'`);
    })();
    const register = async (moving, fixed) => {
      const r = await registerImages(fixed, moving, { ...IO_COMMON, ...options, iterations });
      return { forward: r.forward };
    };
    return { register, dispose: () => {}, options };
  };

/**
 * Every arm by name: its group (one table each), whether it is the group's parent, its label,
 * grid name and grids ('check': one value, for `--quick`; 'small': two; 'full': three), and
 * its builder. Groups: sitreg (SITReg-LNCC parent;
 * MINE-local and MIND mixes), voxelmorph (VM-MI and VM-NCC parents; DNS mix), fire (FIRE-RMS
 * parent; DNS mix), io (IO-MI and IO-MIND parents; DNS mix).
 */
export const ARMS = {
  'sitreg-lncc': {
    group: 'sitreg',
    parent: true,
    label: 'SITReg, own LNCC₇ (parent)',
    gridName: 'α',
    grid: { check: [3], small: [1, 10], full: [1, 3, 10] },
    build: sitregArm('lncc'),
  },
  'sitreg-mine': {
    group: 'sitreg',
    label: 'SITReg + MINE-local (MINE paper)',
    gridName: 'α',
    grid: { check: [30], small: [10, 100], full: [10, 30, 100] },
    build: sitregArm('mine'),
  },
  'sitreg-mind': {
    group: 'sitreg',
    label: 'SITReg + MIND-SSC (MSE)',
    gridName: 'α',
    grid: { check: [30], small: [10, 100], full: [10, 30, 100] },
    build: sitregArm('mind'),
  },
  'vxm-mi': {
    group: 'voxelmorph',
    parent: true,
    label: 'VoxelMorph-MI (parent)',
    gridName: 'α',
    grid: { check: [3], small: [1, 10], full: [1, 3, 10] },
    build: voxelmorphArm('mi'),
  },
  'vxm-ncc': {
    group: 'voxelmorph',
    parent: true,
    label: 'VoxelMorph-NCC₉ (parent)',
    gridName: 'α',
    grid: { check: [3], small: [1, 10], full: [1, 3, 10] },
    build: voxelmorphArm('ncc'),
  },
  'vxm-dns': {
    group: 'voxelmorph',
    label: 'VoxelMorph + DNS features (MASR-Net)',
    gridName: 'α',
    grid: { check: [3], small: [1, 10], full: [1, 3, 10] },
    build: voxelmorphArm('dns'),
  },
  'fire-rms': {
    group: 'fire',
    parent: true,
    label: 'FIRE, own RMS on synthesised images (parent)',
    gridName: 'α',
    grid: { check: [3], small: [1, 10], full: [1, 3, 10] },
    build: fireArm('rms'),
  },
  'fire-dns': {
    group: 'fire',
    label: 'FIRE + DNS features as registration term',
    gridName: 'α',
    grid: { check: [3], small: [1, 10], full: [1, 3, 10] },
    build: fireArm('dns'),
  },
  'io-mi': {
    group: 'io',
    parent: true,
    label: 'registerImages, Parzen MI (parent)',
    gridName: 'λ ×',
    grid: { check: [1], small: [0.5, 2], full: [0.5, 1, 2] },
    build: instanceArm('mi'),
  },
  'io-mind': {
    group: 'io',
    parent: true,
    label: 'registerImages, MIND-SSC (parent)',
    gridName: 'λ ×',
    grid: { check: [1], small: [0.5, 2], full: [0.5, 1, 2] },
    build: instanceArm('mind'),
  },
  'io-dns': {
    group: 'io',
    label: 'registerImages + DNS features (MASR-Net)',
    gridName: 'λ ×',
    grid: { check: [1], small: [0.5, 2], full: [0.5, 1, 2] },
    build: instanceArm('dns'),
  },
};

/** The groups in table order, each with its title and the parent the Δ column is against. */
export const GROUPS = {
  sitreg: { title: 'SITReg with other papers’ similarities', baseline: 'sitreg-lncc' },
  voxelmorph: { title: 'VoxelMorph with DNS features', baseline: 'vxm-mi' },
  fire: { title: 'FIRE with DNS features', baseline: 'fire-rms' },
  io: { title: 'Instance optimisation with DNS features', baseline: 'io-mi' },
};
