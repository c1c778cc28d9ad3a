import {
  assertImagePair,
  Conv,
  fail,
  fmtShape,
  Module,
  mulberry32,
  type RegistrationModel,
  type RegistrationOutput,
  type SeededRandom,
  type TrainingContext,
  type TrainingTerms,
  tf,
  velocityDeformation,
  warp,
} from '@regkit/core';
import { diffusionLoss, velocityKlLoss } from '@regkit/losses';
import { Unet } from './unet.js';

/** Options of {@link createVoxelMorph}. */
export interface VoxelMorphOptions {
  /** 2 or 3 spatial dimensions. */
  ndim: 2 | 3;
  /** Channels of each input image (default 1). */
  channels?: number;
  /** U-Net encoder features (default [16, 32, 32, 32]). */
  encoder?: readonly number[];
  /** U-Net decoder features (default [32, 32, 32, 32, 32, 16, 16]). */
  decoder?: readonly number[];
  /**
   * Predict a stationary velocity field and integrate it (default true, VoxelMorph-diff);
   * false predicts the displacement directly.
   */
  diffeomorphic?: boolean;
  /** Scaling-and-squaring steps (default 7). */
  integrationSteps?: number;
  /** Integrate at 1/integrationDownsize resolution, then upsample (default 2; 1 = full). */
  integrationDownsize?: number;
  /**
   * Probabilistic VoxelMorph (Dalca et al. 2019): a second head predicts the log-variance
   * of a Gaussian posterior over the velocity, training samples from it (reparameterised),
   * and {@link VoxelMorph.klLoss}-style regularisation applies (default false).
   */
  probabilistic?: boolean;
  /**
   * Initial bias of the log-variance head (default −10, as VoxelMorph). Adam moves a bias by
   * about the learning rate per step, so from −10 the KL term's variance part needs thousands
   * of steps to reach its minimum −log(2·ndim·λ), and until then its gradient dominates the
   * shared U-Net features: in our 2D runs with λ = 10, α = 30, lr 10⁻³ the similarity did not
   * improve in 200 steps. {@link optimalLogVariance}(ndim, λ) starts at the minimum instead.
   */
  logVarianceBias?: number;
  /**
   * λ of the KL regulariser of probabilistic models (`velocityKlLoss`; default 10, as
   * Snaauw et al.), used by {@link VoxelMorph.trainingLoss}.
   */
  priorLambda?: number;
  /** Seed of the initial weights and of the posterior samples (default 0). */
  seed?: number;
}

/**
 * The log-variance that minimises the variance part of the VoxelMorph KL term,
 * λ·D·σ² − log σ² with D = 2·ndim neighbours: −log(2·ndim·λ) (−3.69 for 2D, λ = 10).
 */
export function optimalLogVariance(ndim: 2 | 3, priorLambda = 10): number {
  if (!(priorLambda > 0))
    fail('optimalLogVariance', `'priorLambda' must be > 0, got ${priorLambda}`);
  return -Math.log(2 * ndim * priorLambda);
}

/** Per-call options of {@link VoxelMorph.apply}. */
export interface VoxelMorphCallOptions {
  /**
   * Draw the velocity from the posterior (probabilistic models; default false). Training
   * samples, inference uses the mean (as VoxelMorph).
   */
  sample?: boolean;
  /**
   * Seed of this call's posterior sample (default: the model's own stream). The trainer
   * passes the step number, so a resumed training draws the same samples.
   */
  noiseSeed?: number;
}

/** What {@link VoxelMorph.apply} returns (tensors the caller disposes). */
export interface VoxelMorphOutput extends RegistrationOutput {
  /** The moving image warped by the forward deformation, `[B, ...S, C]`. */
  warped: tf.Tensor;
  /** Displacement u of φ = id + u with warped = moving ∘ φ, `[B, ...S, ndim]` (voxels). */
  forward: tf.Tensor;
  /** Displacement of φ⁻¹ = exp(−v) (diffeomorphic models only), `[B, ...S, ndim]`. */
  inverse?: tf.Tensor;
  /**
   * The network's full-resolution field before integration: the (sampled) velocity of
   * diffeomorphic models, the displacement otherwise — what VoxelMorph regularises.
   */
  velocity: tf.Tensor;
  /** Posterior mean (probabilistic models), `[B, ...S, ndim]`. */
  mean?: tf.Tensor;
  /** Posterior log-variance (probabilistic models), `[B, ...S, ndim]`. */
  logVariance?: tf.Tensor;
}

/**
 * VoxelMorph (Balakrishnan et al. 2019) and its diffeomorphic, probabilistic variant
 * (Dalca et al. 2019): a U-Net on the concatenated moving and fixed images, a 3×3(×3)
 * convolution to `ndim` channels initialised with N(0, 10⁻⁵) weights and zero bias
 * (the posterior log-variance head: N(0, 10⁻¹⁰) weights, bias −10), and for diffeomorphic
 * models scaling-and-squaring integration at 1/`integrationDownsize` resolution; the
 * inverse is the integral of the negated velocity.
 */
export class VoxelMorph
  extends Module
  implements RegistrationModel<VoxelMorphOutput, VoxelMorphCallOptions>
{
  readonly ndim: 2 | 3;
  readonly channels: number;
  readonly diffeomorphic: boolean;
  readonly integrationSteps: number;
  readonly integrationDownsize: number;
  readonly probabilistic: boolean;
  readonly priorLambda: number;
  readonly seed: number;
  readonly unet: Unet;
  readonly flow: Conv;
  readonly logVarianceHead: Conv | null;
  private readonly noiseRand: SeededRandom;

  constructor(options: VoxelMorphOptions) {
    super();
    const fn = 'createVoxelMorph';
    const o = options ?? ({} as VoxelMorphOptions);
    if (o.ndim !== 2 && o.ndim !== 3) fail(fn, `'ndim' must be 2 or 3, got ${o.ndim}`);
    this.ndim = o.ndim;
    this.channels = o.channels ?? 1;
    this.diffeomorphic = o.diffeomorphic ?? true;
    this.integrationSteps = o.integrationSteps ?? 7;
    this.integrationDownsize = o.integrationDownsize ?? 2;
    this.probabilistic = o.probabilistic ?? false;
    this.priorLambda = o.priorLambda ?? 10;
    if (!(Number.isFinite(this.priorLambda) && this.priorLambda > 0)) {
      fail(fn, `'priorLambda' must be a finite number > 0, got ${o.priorLambda}`);
    }
    if (!Number.isInteger(this.channels) || this.channels < 1) {
      fail(fn, `'channels' must be a positive integer, got ${this.channels}`);
    }
    if (!Number.isInteger(this.integrationSteps) || this.integrationSteps < 0) {
      fail(fn, `'integrationSteps' must be an integer ≥ 0, got ${this.integrationSteps}`);
    }
    if (!Number.isInteger(this.integrationDownsize) || this.integrationDownsize < 1) {
      fail(fn, `'integrationDownsize' must be a positive integer, got ${this.integrationDownsize}`);
    }
    const seed = o.seed ?? 0;
    this.seed = seed;
    this.unet = this.addModule(
      'unet',
      new Unet({
        ndim: this.ndim,
        inChannels: 2 * this.channels,
        encoder: o.encoder,
        decoder: o.decoder,
        seed,
      }),
    );
    this.flow = this.addModule(
      'flow',
      new Conv(this.ndim, this.unet.outChannels, this.ndim, {
        init: { normal: 1e-5 },
        biasInit: 'zeros',
        seed: seed * 1000 + 997,
      }),
    );
    this.logVarianceHead = this.probabilistic
      ? this.addModule(
          'logVariance',
          new Conv(this.ndim, this.unet.outChannels, this.ndim, {
            init: { normal: 1e-10 },
            biasInit: 'zeros',
            seed: seed * 1000 + 998,
          }),
        )
      : null;
    if (this.logVarianceHead?.bias) {
      const b = this.logVarianceHead.bias;
      const bias = o.logVarianceBias ?? -10;
      if (!Number.isFinite(bias)) fail(fn, `'logVarianceBias' must be finite, got ${bias}`);
      tf.tidy(() => b.assign(tf.fill(b.shape, bias)));
    }
    this.noiseRand = mulberry32((seed ^ 0x2545f491) >>> 0);
  }

  /**
   * The state besides the weights: the position of the model's own noise stream (used by
   * samples without a `noiseSeed`). Training checkpoints store it (`trainRegistration` does).
   */
  getTrainingState(): { noise: number } {
    return { noise: this.noiseRand.state };
  }

  /** Restores what {@link getTrainingState} returned. */
  setTrainingState(state: { noise: number }): void {
    if (!state || !Number.isInteger(state.noise) || state.noise < 0 || state.noise > 0xffffffff) {
      fail(
        'VoxelMorph.setTrainingState',
        `'state' must be { noise: uint32 }, got ${JSON.stringify(state)}`,
      );
    }
    this.noiseRand.state = state.noise;
  }

  /**
   * Registers `moving` to `fixed` (`[B, ...S, channels]` each, S divisible by 16 for the
   * default 4-level U-Net): returns the warped image, the forward (and inverse) displacement
   * and the fields to regularise.
   */
  apply(
    moving: tf.Tensor,
    fixed: tf.Tensor,
    options: VoxelMorphCallOptions = {},
  ): VoxelMorphOutput {
    const fn = 'VoxelMorph.apply';
    const nd = assertImagePair(fn, moving, fixed);
    if (nd !== this.ndim || moving.shape[nd + 1] !== this.channels) {
      fail(
        fn,
        `'moving' ${fmtShape(moving.shape)} must be a ${this.ndim}D image with ${this.channels} channel(s)`,
      );
    }
    const sample = options.sample ?? false;
    const out = tf.tidy(() => {
      const features = this.unet.apply(tf.concat([moving, fixed], -1));
      const mean = this.flow.apply(features);
      let logVariance: tf.Tensor | null = null;
      let velocity = mean;
      if (this.logVarianceHead) {
        logVariance = this.logVarianceHead.apply(features);
        if (sample) {
          velocity = tf.add(
            mean,
            tf.mul(tf.exp(tf.mul(logVariance, 0.5)), this.noise(mean.shape, options.noiseSeed)),
          );
        }
      }
      let forward = velocity;
      let inverse: tf.Tensor | undefined;
      if (this.diffeomorphic) {
        ({ forward, inverse } = velocityDeformation(velocity, {
          steps: this.integrationSteps,
          downsize: this.integrationDownsize,
        }));
      }
      const warped = warp(moving, forward);
      const result: tf.Tensor[] = [warped, forward, velocity];
      if (inverse) result.push(inverse);
      if (this.probabilistic) result.push(mean, logVariance!);
      return result;
    });
    const [warped, forward, velocity] = out as [tf.Tensor, tf.Tensor, tf.Tensor];
    let i = 3;
    const result: VoxelMorphOutput = { warped, forward, velocity };
    if (this.diffeomorphic) result.inverse = out[i++]!;
    if (this.probabilistic) {
      result.mean = out[i++]!;
      result.logVariance = out[i++]!;
    }
    return result;
  }

  /**
   * VoxelMorph's training objective of one pair (the trainer's {@link TrainingContext}):
   * α·similarity(fixed, moving ∘ φ) on a posterior sample (probabilistic models; the noise
   * seeded by the step) plus w·regulariser, the regulariser defaulting to the KL term
   * `velocityKlLoss(mean, logVariance, { priorLambda })` for probabilistic models and to the
   * diffusion of the velocity otherwise; w defaults to 1. VoxelMorph has no similarity of its
   * own: the context must give one.
   */
  trainingLoss(moving: tf.Tensor, fixed: tf.Tensor, context: TrainingContext): TrainingTerms {
    const similarity =
      context.similarity ??
      fail(
        'VoxelMorph.trainingLoss',
        `VoxelMorph has no similarity of its own: give one (e.g. similarity: (f, m) => localNccLoss(f, m))`,
      );
    const out = this.apply(moving, fixed, { sample: true, noiseSeed: context.step });
    const sim = tf.mul(similarity(fixed, out.warped), context.similarityWeight);
    const reg = context.regulariser
      ? context.regulariser(out)
      : this.probabilistic
        ? velocityKlLoss(out.mean!, out.logVariance!, { priorLambda: this.priorLambda })
        : diffusionLoss(out.velocity);
    return {
      similarity: sim as tf.Scalar,
      regularisation: tf.mul(reg, context.regularisationWeight ?? 1) as tf.Scalar,
    };
  }

  /** Standard normal noise from the model's seeded stream, or from `seed`. */
  private noise(shape: number[], seed?: number): tf.Tensor {
    const n = shape.reduce((a, b) => a * b, 1);
    const values = new Float32Array(n);
    const rand = seed === undefined ? this.noiseRand : mulberry32((seed * 0x9e3779b1) ^ this.seed);
    for (let i = 0; i < n; i += 2) {
      const r = Math.sqrt(-2 * Math.log(1 - rand()));
      const t = 2 * Math.PI * rand();
      values[i] = r * Math.cos(t);
      if (i + 1 < n) values[i + 1] = r * Math.sin(t);
    }
    return tf.tensor(values, shape);
  }
}

/**
 * Creates a (diffeomorphic, optionally probabilistic) VoxelMorph model; see
 * {@link VoxelMorph}. Defaults: VoxelMorph-diff, 7 integration steps at half resolution.
 *
 * @example
 * ```ts
 * const model = createVoxelMorph({ ndim: 2 });
 * const { warped, forward, inverse } = model.apply(moving, fixed);
 * ```
 */
export function createVoxelMorph(options: VoxelMorphOptions): VoxelMorph {
  return new VoxelMorph(options);
}
