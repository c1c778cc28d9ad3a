#!/usr/bin/env node
/**
 * MINE registration in small (Snaauw et al.): diffeomorphic probabilistic VoxelMorph trained
 * with MINE-global, MINE-local (N = 8, L = 30), local NCC (window 9) and Parzen MI under the
 * same budget, on mono-modal (Colin27 T1) and multi-modal (BraTS T1 → FLAIR, T1 → T2) brain
 * slices with synthetic deformations; then a sweep of the similarity weight α for MINE-local.
 * Prints the paper's table in small: mean Dice (std), % |J| ≤ 0, inference time.
 *
 *   node src/run.mjs                       # everything (BraTS tasks skipped without the data)
 *   node src/run.mjs --tasks colin --steps 100 --alphas 1,3
 *
 * Training resumes from results/checkpoints/ when interrupted (delete it to start over); a
 * finished checkpoint only re-evaluates. Trained networks go to results/networks/<run> for
 * `regkit register --method voxelmorph --weights <dir>`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { initExampleBackend } from '@regkit/example-common/backend';
import { evaluateMethod } from '@regkit/example-common/evaluate';
import { bratsDataset, colinDataset, trainingPair } from '@regkit/example-common/slices';
import { epochsForStepsOrExit } from '@regkit/example-common/steps';
import { localNccLoss, MineEstimator, mutualInformationLoss } from '@regkit/losses';
import {
  createVoxelMorph,
  optimalLogVariance,
  saveRegistrationNetwork,
  trainRegistration,
} from '@regkit/networks';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    tasks: { type: 'string', default: 'colin,flair,t2' },
    similarities: { type: 'string', default: 'mine-global,mine-local,ncc,mi' },
    steps: { type: 'string', default: '800' },
    alpha: { type: 'string', default: '30' },
    alphas: { type: 'string', default: '3,10,30,100' },
    'sweep-task': { type: 'string', default: 'flair' },
    'learning-rate': { type: 'string', default: '1e-3' },
    out: { type: 'string', default: join(here, '../results') },
    backend: { type: 'string' },
  },
});
const STEPS_PER_EPOCH = 50;
const PRIOR_LAMBDA = 10;
const steps = Number(args.steps);
const epochs = epochsForStepsOrExit(args.steps, STEPS_PER_EPOCH);
const lr = Number(args['learning-rate']);

const backend = await initExampleBackend(args.backend);
console.log(`backend ${backend}; ${epochs} epochs × ${STEPS_PER_EPOCH} steps; Adam lr ${lr}`);

/** Similarity terms (fixed, warped) => scalar to minimise, by name. */
function similarityOf(name, seed) {
  switch (name) {
    case 'mine-global':
      return new MineEstimator({
        shuffle: 'global',
        features: 30,
        channelsA: 1,
        channelsB: 1,
        seed,
      });
    case 'mine-local':
      return new MineEstimator({
        shuffle: 'local',
        neighbourhood: 8,
        features: 30,
        channelsA: 1,
        channelsB: 1,
        seed,
      });
    case 'ncc':
      return (f, w) => localNccLoss(w, f, { window: 9 });
    case 'mi':
      return (f, w) => mutualInformationLoss(w, f);
    default:
      throw new Error(`unknown similarity '${name}'`);
  }
}

const LABEL = {
  'mine-global': 'VM-MINE_global',
  'mine-local': 'VM-MINE_local',
  ncc: 'VM-NCC',
  mi: 'VM-MI',
};

/** Test-set metrics of a trained model (or of the identity when `model` is null). */
async function evaluate(model, dataset) {
  const m = await evaluateMethod(dataset, model ? (mv, fx) => model.apply(mv, fx) : null, {
    hd95: false,
  });
  return {
    pairs: m.pairs,
    dice: m.dice.mean,
    diceStd: m.dice.std,
    foldingPercent: m.folding.mean,
    inferenceMs: model ? m.ms.median : 0,
  };
}

async function run(dataset, taskKey, simName, alpha) {
  const seed = 1;
  // the log-variance head starts at the KL minimum (see createVoxelMorph's logVarianceBias)
  const options = {
    ndim: 2,
    probabilistic: true,
    logVarianceBias: optimalLogVariance(2, PRIOR_LAMBDA),
    priorLambda: PRIOR_LAMBDA,
    seed,
  };
  const model = createVoxelMorph(options);
  const similarity = similarityOf(simName, seed);
  const tag = `${taskKey}-${simName}-a${alpha}-s${steps}`;
  const t0 = Date.now();
  let last = '';
  const result = await trainRegistration({
    model,
    similarity,
    similarityWeight: alpha,
    learningRate: lr,
    epochs,
    stepsPerEpoch: STEPS_PER_EPOCH,
    data: (epoch, step) => trainingPair(dataset, epoch * STEPS_PER_EPOCH + step),
    checkpointDir: join(args.out, 'checkpoints', tag),
    onProgress: (p) => {
      if (p.step === p.stepsPerEpoch - 1) {
        last = `epoch ${p.epoch + 1}/${p.epochs} loss ${p.loss.toFixed(3)} (sim ${p.similarity.toFixed(3)}, KL ${p.regularisation.toFixed(3)})`;
        process.stdout.write(`\r  ${tag}: ${last}   `);
      }
    },
  });
  const trainSeconds = (Date.now() - t0) / 1000;
  // the trained network, for `regkit register --method voxelmorph --weights <dir>`
  await saveRegistrationNetwork(join(args.out, 'networks', tag), model, {
    method: 'voxelmorph',
    options,
    inputShape: dataset.size,
    description: `examples/mine: ${dataset.name}, ${LABEL[simName]}, α ${alpha}, ${steps} steps, Adam lr ${lr}; inputs scaled by the 99.5th percentile of the positive voxels`,
  });
  const metrics = await evaluate(model, dataset);
  process.stdout.write(
    `\r  ${tag}: Dice ${metrics.dice.toFixed(3)}, folding ${metrics.foldingPercent.toFixed(4)}%, ${metrics.inferenceMs.toFixed(0)} ms; trained ${trainSeconds.toFixed(0)} s${result.resumedFromEpoch ? ` (resumed at epoch ${result.resumedFromEpoch})` : ''}\n`,
  );
  model.dispose();
  if (typeof similarity.dispose === 'function') similarity.dispose();
  return { task: taskKey, similarity: simName, alpha, steps, trainSeconds, ...metrics };
}

const fmt = (m, s) => `${(100 * m).toFixed(1)} (${(100 * s).toFixed(1)})`;

const loaders = {
  colin: colinDataset,
  flair: () => bratsDataset('t2f_flair'),
  t2: () => bratsDataset('t2w'),
};
const tasks = args.tasks.split(',').filter(Boolean);
const sims = args.similarities.split(',').filter(Boolean);
const alpha = Number(args.alpha);
const datasets = {};
const rows = [];
for (const key of tasks) {
  const ds = await loaders[key]();
  if (!ds) {
    console.log(`${key}: skipped, the read-only BraTS case was not found (set REGKIT_BRATS_DIR)`);
    continue;
  }
  datasets[key] = ds;
  console.log(
    `${ds.name}: ${ds.train.length} training slices, ${ds.test.length} test slices × 3 deformations, ${ds.size.join('×')}`,
  );
  rows.push({ task: key, similarity: 'affine', alpha: 0, ...(await evaluate(null, ds)) });
  for (const sim of sims) rows.push(await run(ds, key, sim, alpha));
}

const sweepTask = datasets[args['sweep-task']] ? args['sweep-task'] : Object.keys(datasets)[0];
const sweep = [];
for (const a of args.alphas.split(',').filter(Boolean).map(Number)) {
  const existing = rows.find(
    (r) => r.task === sweepTask && r.similarity === 'mine-local' && r.alpha === a,
  );
  sweep.push(existing ?? (await run(datasets[sweepTask], sweepTask, 'mine-local', a)));
}

// the table: one column pair per task
const keys = Object.keys(datasets);
const header = `| method | ${keys.map((k) => `${datasets[k].name}: Dice % (std) | % \\|J\\| ≤ 0 | ms`).join(' | ')} |`;
const lines = [header, `|---|${keys.map(() => '---|---|---').join('|')}|`];
for (const sim of ['affine', ...sims]) {
  const cells = keys.map((k) => {
    const r = rows.find((x) => x.task === k && x.similarity === sim);
    if (!r) return ' | | ';
    if (sim === 'affine') return `${fmt(r.dice, r.diceStd)} | – | –`;
    return `${fmt(r.dice, r.diceStd)} | ${r.foldingPercent.toFixed(4)} | ${r.inferenceMs.toFixed(0)}`;
  });
  lines.push(`| ${sim === 'affine' ? 'before (identity)' : LABEL[sim]} | ${cells.join(' | ')} |`);
}
const sweepLines = [
  `| α (MINE_local, ${datasets[sweepTask].name}) | Dice % (std) | % \\|J\\| ≤ 0 |`,
  '|---|---|---|',
  ...sweep.map(
    (r) => `| ${r.alpha} | ${fmt(r.dice, r.diceStd)} | ${r.foldingPercent.toFixed(4)} |`,
  ),
];
const table = `${lines.join('\n')}\n\n${sweepLines.join('\n')}\n`;
console.log(`\n${table}`);
mkdirSync(args.out, { recursive: true });
const stamp = { backend, steps, learningRate: lr, alpha, date: new Date().toISOString() };
writeFileSync(
  join(args.out, 'results.json'),
  `${JSON.stringify({ ...stamp, rows, sweep }, null, 1)}\n`,
);
writeFileSync(join(args.out, 'table.md'), table);
console.log(`results: ${join(args.out, 'results.json')}, ${join(args.out, 'table.md')}`);
