#!/usr/bin/env node
/**
 * MINE registration (Snaauw et al.) under the shared protocol of
 * examples/common/src/protocol.mjs: BraTS T1 → FLAIR slices (the paper's multi-modal task),
 * validation grids, 3 seeds, |u| ≤ 8 voxels, mean ± SE and paired differences against VM-NCC
 * (the paper's VM-CC). Diffeomorphic probabilistic VoxelMorph (KL, λ = 10, as the paper)
 * trained with local NCC (window 9), Parzen MI, MINE-local (N = 8, L = 30) and MINE-global;
 * the similarity weight α is chosen per similarity on the validation pairs.
 *
 * The statistics network of MINE is warm-started: before registration training it is trained
 * alone (its own Adam, lr 1e-2) to maximise the MI bound between unregistered training pairs
 * (unsupervised), then it trains jointly with the registration network.
 *
 * Optimisers: the paper's Adam (lr 1e-4, β1 0.99) and the common Adam (lr 1e-3, β1 0.9), each
 * for every arm (--optimisers paper,common).
 *
 *   node src/run.mjs --quick      # a check: 64×64, 150 steps, 2-value α grids, NCC/MI/MINE-local
 *   node src/run.mjs              # the full protocol: 96×96, 600 steps, 3-value α grids
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { tf } from '@regkit/core';
import { initExampleBackend } from '@regkit/example-common/backend';
import {
  ASEG_GROUPS,
  BRATS_GROUPS,
  bratsProtocolDataset,
  evaluateIdentity,
  parseGrid,
  protocolSettings,
  protocolSplit,
  protocolTable,
  protocolTrainingPair,
  runArm,
} from '@regkit/example-common/protocol';
import { voxelmorphRemapDataset } from '@regkit/example-common/slices';
import { epochsForStepsOrExit } from '@regkit/example-common/steps';
import { localNccLoss, MineEstimator, mutualInformationLoss } from '@regkit/losses';
import { createVoxelMorph, optimalLogVariance, trainRegistration } from '@regkit/networks';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    steps: { type: 'string' },
    similarities: { type: 'string' },
    optimisers: { type: 'string', default: 'paper,common' },
    'warm-start-steps': { type: 'string' },
    task: { type: 'string', default: 'brats-flair' },
    size: { type: 'string' },
    deformations: { type: 'string' },
    seeds: { type: 'string' },
    grid: { type: 'string' },
    out: { type: 'string', default: join(here, '../results') },
    backend: { type: 'string' },
  },
});
const settings = protocolSettings({
  quick: args.quick,
  size: args.size,
  deformations: args.deformations,
  seeds: args.seeds,
});
const STEPS_PER_EPOCH = 50;
const PRIOR_LAMBDA = 10;
// `--steps` as typed goes to the check, so that its message names what the user wrote
const stepsArg = args.steps ?? (args.quick ? 150 : 600);
const epochs = epochsForStepsOrExit(stepsArg, STEPS_PER_EPOCH);
const steps = Number(stepsArg);
const warmSteps = Number(args['warm-start-steps'] ?? (args.quick ? 300 : 1000));
/** Adam rate of the warm start (MINE's statistics network alone): 1e-3 barely moves it in 300 steps. */
const WARM_LR = 1e-2;
const OPTIMISERS = {
  paper: { label: 'Adam lr 1e-4, β1 0.99 (paper)', learningRate: 1e-4, beta1: 0.99 },
  common: { label: 'Adam lr 1e-3, β1 0.9', learningRate: 1e-3, beta1: 0.9 },
};
/** α grids per similarity (the losses have different scales). */
const ALPHA_GRID = Object.fromEntries(
  ['ncc', 'mi', 'mine-local', 'mine-global'].map((k) => [
    k,
    parseGrid(args.grid, args.quick ? [1, 10] : [3, 10, 30]),
  ]),
);
const LABEL = {
  ncc: 'VM-NCC (window 9)',
  mi: 'VM-MI (Parzen)',
  'mine-local': 'VM-MINE_local (warm-started)',
  'mine-global': 'VM-MINE_global (warm-started)',
};

const backend = await initExampleBackend(args.backend);
const t0 = performance.now();
console.log(
  `backend ${backend}; ${args.quick ? 'QUICK' : 'full'} protocol: ${settings.size.join('×')}, ${steps} steps, seeds ${settings.seeds.join(', ')}, ${settings.deformations} deformations per test slice; MINE warm start ${warmSteps} steps`,
);
/**
 * The task: `brats-flair` (the paper's multi-modal task, T1 → FLAIR) or `vxm-remap` (the
 * VoxelMorph T1 → the same T1 under a non-monotone contrast remap, scored on its FreeSurfer
 * aseg labels; `size` n × 16·round(1.2·n/16), the volume's aspect).
 */
const TASKS = {
  'brats-flair': {
    load: () => bratsProtocolDataset('t2f_flair', settings.size),
    groups: BRATS_GROUPS,
    missing: 'the read-only BraTS case was not found (set REGKIT_BRATS_DIR)',
  },
  'vxm-remap': {
    load: () =>
      voxelmorphRemapDataset({
        size: [settings.size[0], 16 * Math.round((1.2 * settings.size[0]) / 16)],
        split: protocolSplit,
      }),
    groups: ASEG_GROUPS,
    missing: 'the read-only VoxelMorph test T1 was not found (../shared/data/read-only)',
  },
};
const task = TASKS[args.task];
if (!task) throw new Error(`--task: unknown '${args.task}' (${Object.keys(TASKS).join(', ')})`);
const dataset = await task.load();
if (!dataset) {
  console.log(`examples/mine: skipped, ${task.missing}`);
  process.exit(0);
}
console.log(
  `${dataset.name}: ${dataset.train.length} training, ${dataset.validation.length} validation, ${dataset.test.length} test slices`,
);

/** Mean MINE estimate (nats) over 8 fixed unregistered training pairs. */
function estimateOn(estimator) {
  let sum = 0;
  for (let i = 0; i < 8; i++) {
    const p = protocolTrainingPair(dataset, 98, i);
    sum += tf.tidy(() => estimator.estimate(p.fixed, p.moving).dataSync()[0]);
    tf.dispose([p.moving, p.fixed]);
  }
  return sum / 8;
}

/**
 * A MINE statistics network trained alone to maximise the MI bound between the fixed and the
 * moving image of unregistered training pairs (no labels, no registration): its own Adam
 * (lr 1e-2), `warmSteps` fresh pairs.
 */
function warmStartedMine(shuffle, seed) {
  const estimator = new MineEstimator({
    shuffle,
    neighbourhood: 8,
    features: 30,
    channelsA: 1,
    channelsB: 1,
    seed,
  });
  const before = estimateOn(estimator);
  const optimiser = tf.train.adam(WARM_LR);
  for (let i = 0; i < warmSteps; i++) {
    const p = protocolTrainingPair(dataset, 50 + seed, i);
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
  const after = estimateOn(estimator);
  return { estimator, before, after };
}

const warmLog = [];
function similarityOf(name, seed) {
  switch (name) {
    case 'ncc':
      return { similarity: (f, w) => localNccLoss(w, f, { window: 9 }) };
    case 'mi':
      return { similarity: (f, w) => mutualInformationLoss(w, f) };
    case 'mine-local':
    case 'mine-global': {
      const { estimator, before, after } = warmStartedMine(name.slice(5), seed);
      warmLog.push({ name, seed, before, after });
      console.log(
        `    ${name} warm start (seed ${seed}): MI estimate on unregistered pairs ${before.toFixed(3)} → ${after.toFixed(3)} nats`,
      );
      return { similarity: estimator, dispose: () => estimator.dispose() };
    }
    default:
      throw new Error(
        `--similarities: unknown similarity '${name}' (${Object.keys(LABEL).join(', ')})`,
      );
  }
}

const trainOf =
  (name, opt) =>
  async ({ value, seed }) => {
    const model = createVoxelMorph({
      ndim: 2,
      probabilistic: true,
      logVarianceBias: optimalLogVariance(2, PRIOR_LAMBDA),
      priorLambda: PRIOR_LAMBDA,
      seed,
    });
    const sim = similarityOf(name, seed);
    await trainRegistration({
      model,
      similarity: sim.similarity,
      similarityWeight: value,
      learningRate: opt.learningRate,
      beta1: opt.beta1,
      beta2: 0.999,
      epochs,
      stepsPerEpoch: STEPS_PER_EPOCH,
      data: (epoch, step) => protocolTrainingPair(dataset, seed, epoch * STEPS_PER_EPOCH + step),
    });
    sim.dispose?.();
    return { register: (m, f) => model.apply(m, f), dispose: () => model.dispose() };
  };

// quick: MINE-local (the paper's proposal) against NCC and MI; the full protocol adds MINE-global
const sims = (
  args.similarities ?? (args.quick ? 'ncc,mi,mine-local' : 'ncc,mi,mine-local,mine-global')
)
  .split(',')
  .filter(Boolean);
const opts = args.optimisers.split(',').filter(Boolean);
for (const o of opts) {
  if (!OPTIMISERS[o]) throw new Error(`--optimisers: unknown '${o}' (paper, common)`);
}
const identity = await evaluateIdentity(dataset, settings);
const results = {};
/** Writes to a temporary file and renames it, so a reader never sees half a file. */
const write = (file, text) => {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
};
/**
 * Writes results.json and table.md; called after every arm (`complete: false` until the
 * last), so that a run stopped early keeps the arms it finished.
 */
function save(complete) {
  const tables = Object.entries(results).map(
    ([o, arms]) =>
      `### ${dataset.name}, ${OPTIMISERS[o].label} (${dataset.size.join('×')}, ${dataset.test.length} test slices × ${settings.deformations} deformations, ${settings.seeds.length} seeds, ${steps} steps)\n\n${protocolTable(arms, { baseline: 'ncc', identity, groups: task.groups })}\n`,
  );
  const minutes = (performance.now() - t0) / 60_000;
  const table = `${tables.join('\n')}\nMean ± standard error over seeds; Δ: paired difference against VM-NCC (same seeds and test pairs). Run: ${args.quick ? '--quick' : 'full protocol'}${complete ? '' : ' (INCOMPLETE: stopped before every arm ran)'}, ${minutes.toFixed(1)} min on ${backend}.\n`;
  mkdirSync(args.out, { recursive: true });
  const stamp = {
    backend,
    quick: args.quick,
    complete,
    settings,
    steps,
    warmSteps,
    warmLearningRate: WARM_LR,
    optimisers: Object.fromEntries(opts.map((o) => [o, OPTIMISERS[o]])),
    alphaGrid: ALPHA_GRID,
    task: args.task,
    minutes,
    date: new Date().toISOString(),
  };
  write(
    join(args.out, 'results.json'),
    `${JSON.stringify({ ...stamp, warmStart: warmLog, identity, results }, null, 1)}\n`,
  );
  write(join(args.out, 'table.md'), table);
  return table;
}
for (const o of opts) {
  const opt = OPTIMISERS[o];
  console.log(`optimiser: ${opt.label}`);
  results[o] = [];
  for (const name of sims) {
    if (!LABEL[name]) throw new Error(`--similarities: unknown '${name}'`);
    console.log(`${name}: ${LABEL[name]}`);
    results[o].push(
      await runArm({
        name,
        label: LABEL[name],
        gridName: 'α',
        grid: ALPHA_GRID[name],
        train: trainOf(name, opt),
        dataset,
        settings,
      }),
    );
    save(false);
  }
}
console.log(`\n${save(true)}`);
console.log(`results: ${join(args.out, 'results.json')}, ${join(args.out, 'table.md')}`);
