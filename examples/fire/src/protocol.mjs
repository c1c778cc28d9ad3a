/**
 * examples/fire protocol (issue 20): the paper's experiment in small. Multi-modal slices
 * (BraTS T1 → FLAIR, BraTS T1 → T2, ITK/BrainWeb T1 → PD) with a large random affine
 * (20–50 % along one axis) plus independent non-rigid deformations, held-out test slices;
 * FIRE-affine and FIRE against VoxelMorph-MI at the same budget, `regkit register`
 * (registerAffine; registerImages: affine + deformable) and elastix (affine; affine +
 * B-spline); Dice, NCC to the truth, % |J| ≤ 0, inverse consistency and CPU inference time;
 * several seeds for the trained arms, mean ± SE and paired differences against FIRE.
 *
 *   node examples/fire/src/protocol.mjs --quick     # < 10 min: a check of the pipeline
 *   node examples/fire/src/protocol.mjs             # the full run (hours on 2 cores)
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { affineField, tf, warp } from '@regkit/core';
import { initExampleBackend } from '@regkit/example-common/backend';
import { bratsDataset, disposePair, itkPairDataset } from '@regkit/example-common/slices';
import { meanAndSe, pairedDifference, pm, summariseRuns } from '@regkit/example-common/stats';
import { epochsForStepsOrExit } from '@regkit/example-common/steps';
import { localNccLoss, mutualInformationLoss } from '@regkit/losses';
import { foldingPercent, inverseConsistencyError, meanDice, ncc } from '@regkit/metrics';
import {
  createFire,
  createVoxelMorph,
  loadRegistrationNetwork,
  trainFire,
  trainRegistration,
} from '@regkit/networks';
import { registerAffine, registerImages } from '@regkit/register';
import { elastixAvailable, elastixRegister } from './elastix.mjs';
import { largeAffinePair, synthesisPng } from './pairs.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    tasks: { type: 'string', default: 'itk,flair,t2' },
    methods: { type: 'string' },
    seeds: { type: 'string', default: '1,2,3' },
    steps: { type: 'string' },
    size: { type: 'string', default: '64' },
    'test-slices': { type: 'string' },
    deformations: { type: 'string' },
    'affine-min': { type: 'string', default: '0.2' },
    'affine-max': { type: 'string', default: '0.5' },
    rates: { type: 'string', default: '1e-3,1e-3,1e-3' },
    'max-displacement': { type: 'string', default: '1' },
    similarity: { type: 'string', default: 'rms' },
    width: { type: 'string', default: '0.125' },
    'residual-blocks': { type: 'string', default: '2' },
    out: { type: 'string' },
    'fire-weights': { type: 'string' },
    backend: { type: 'string' },
  },
});
const quick = args.quick;
const steps = Number(args.steps ?? (quick ? 20 : 1000));
const size = Number(args.size);
const seeds = args.seeds.split(',').map(Number);
const testSlices = Number(args['test-slices'] ?? (quick ? 2 : 8));
const deformations = Number(args.deformations ?? (quick ? 1 : 2));
const [aMin, aMax] = [Number(args['affine-min']), Number(args['affine-max'])];
const [affineRate, nonRigidRate, synthesisRate] = args.rates.split(',').map(Number);
const rates = { affine: affineRate, nonRigid: nonRigidRate, synthesis: synthesisRate };
const fireOptions = {
  ndim: 2,
  width: Number(args.width),
  residualBlocks: Number(args['residual-blocks']),
  maxDisplacement: Number(args['max-displacement']),
};
const SIMILARITIES = {
  rms: undefined,
  mi: (f, w) => mutualInformationLoss(f, w),
  lncc: (f, w) => localNccLoss(f, w),
};
if (!(args.similarity in SIMILARITIES)) {
  console.error(`--similarity must be rms (the paper's), mi or lncc, got '${args.similarity}'`);
  process.exit(2);
}
const methods = new Set(
  (
    args.methods ??
    (quick ? 'fire,voxelmorph,register,elastix' : 'fire,fire-mi,voxelmorph,register,elastix')
  ).split(','),
);
const out = args.out ?? join(here, '../results/protocol', quick ? 'quick' : 'full');
const STEPS_PER_EPOCH = quick ? 10 : 50;
const epochs = epochsForStepsOrExit(String(steps), STEPS_PER_EPOCH);
const started = Date.now();
const backend = await initExampleBackend(args.backend);
const withElastix = methods.has('elastix') && elastixAvailable();
if (methods.has('elastix') && !withElastix)
  console.log('elastix: not on PATH, its rows are left out');
console.log(
  `backend ${backend}; ${quick ? 'QUICK' : 'full'}; seeds ${seeds.join(',')}; ${steps} training steps; ${size}×${size}; affine strength [${aMin}, ${aMax}]; FIRE ${JSON.stringify(fireOptions)}, rates ${JSON.stringify(rates)}, registration term ${args.similarity}`,
);

/** Test slices spread over the dataset's held-out ones (all of them when `count` ≥ their number). */
function pickTest(test, count) {
  if (count >= test.length) return test;
  return Array.from(
    { length: count },
    (_, i) => test[Math.floor(((i + 0.5) * test.length) / count)],
  );
}

const TASKS = {
  itk: async () => {
    const ds = await itkPairDataset([size, size]);
    return {
      ds,
      key: 'itk',
      name: 'ITK BrainWeb T1 → PD',
      testZ: ds.test,
      deformations: quick ? 2 : 8,
    };
  },
  flair: async () => {
    const ds = await bratsDataset('t2f_flair', { size: [size, size] });
    return (
      ds && {
        ds,
        key: 'flair',
        name: 'BraTS T1 → FLAIR',
        testZ: pickTest(ds.test, testSlices),
        deformations,
      }
    );
  },
  t2: async () => {
    const ds = await bratsDataset('t2w', { size: [size, size] });
    return (
      ds && {
        ds,
        key: 't2',
        name: 'BraTS T1 → T2',
        testZ: pickTest(ds.test, testSlices),
        deformations,
      }
    );
  },
};

/** Per-pair metrics of `register(moving, fixed) → { forward, inverse?, ms? }` (null: identity). */
async function evaluate(task, register) {
  const rows = [];
  for (const z of task.testZ) {
    for (let r = 0; r < task.deformations; r++) {
      const pair = largeAffinePair(task.ds, z, 100_000 + 10 * z + r, aMin, aMax);
      const row = { z, r };
      let o = null;
      if (register) {
        const t0 = performance.now();
        o = await register(pair.moving, pair.fixed);
        await o.forward.data();
        row.ms = o.ms ?? performance.now() - t0;
      }
      const field = o?.forward ?? tf.zeros([1, size, size, 2]);
      const warped = warp(pair.moving, field);
      row.ncc = await ncc(warped, pair.movingTruth);
      if (pair.movingLabels) {
        const wl = warp(pair.movingLabels, field, { interpolation: 'nearest' });
        row.dice = await meanDice(wl, pair.fixedLabels);
        wl.dispose();
      }
      row.folding = await foldingPercent(field);
      if (o?.inverse) row.ic = (await inverseConsistencyError(o.forward, o.inverse)).mean;
      tf.dispose([warped, field]);
      if (o) tf.dispose(Object.values(o).filter((t) => t instanceof tf.Tensor));
      disposePair(pair);
      rows.push(row);
    }
  }
  return rows;
}

/** The training pair of `step` for `seed`: a training slice, a fresh affine + deformations. */
const trainingData = (task, seed) => (epoch, step) => {
  const i = epoch * STEPS_PER_EPOCH + step;
  const z = task.ds.train[(i * 7919 + seed * 104_729) % task.ds.train.length];
  const p = largeAffinePair(task.ds, z, seed * 1_000_000 + i, aMin, aMax);
  tf.dispose([p.movingTruth, p.movingLabels, p.fixedLabels].filter(Boolean));
  return { moving: p.moving, fixed: p.fixed };
};

const ckpt = (task, name, seed) =>
  join(
    out,
    'checkpoints',
    `${task.key}-${name}-seed${seed}-s${steps}-${size}-a${aMin}-${aMax}-${JSON.stringify(rates)}-${JSON.stringify(fireOptions)}-${backend}`.replace(
      /[^\w.,-]/g,
      '',
    ),
  );

async function trainedFire(task, seed, similarity) {
  const fire = createFire({ ...fireOptions, seed });
  const t0 = performance.now();
  await trainFire({
    model: fire,
    data: trainingData(task, seed),
    epochs,
    stepsPerEpoch: STEPS_PER_EPOCH,
    learningRates: rates,
    similarity: SIMILARITIES[similarity],
    checkpointDir: ckpt(task, `fire-${similarity}`, seed),
    onProgress: (p) => {
      if (p.step === p.stepsPerEpoch - 1)
        process.stdout.write(
          `\r  ${task.key} FIRE seed ${seed}: epoch ${p.epoch + 1}/${p.epochs} loss ${p.loss.toFixed(4)}   `,
        );
    },
  });
  return { fire, seconds: (performance.now() - t0) / 1000 };
}

async function trainedVoxelMorph(task, seed) {
  const vxm = createVoxelMorph({ ndim: 2, seed });
  const t0 = performance.now();
  await trainRegistration({
    model: vxm,
    data: trainingData(task, seed),
    epochs,
    stepsPerEpoch: STEPS_PER_EPOCH,
    similarity: (f, w) => mutualInformationLoss(f, w),
    learningRate: 1e-3,
    checkpointDir: ckpt(task, 'vxm-mi', seed),
  });
  return { vxm, seconds: (performance.now() - t0) / 1000 };
}

const INSTANCE = {
  'register-affine': async (m, f) => ({
    forward: (await registerAffine(f, m, { similarity: 'mi' })).forward,
  }),
  'register-affine-long': async (m, f) => ({
    forward: (
      await registerAffine(f, m, { similarity: 'mi', levels: 3, iterations: [600, 400, 200] })
    ).forward,
  }),
  register: async (m, f) => {
    const r = await registerImages(f, m, { similarity: 'mi', inverse: true });
    return { forward: r.forward, inverse: r.inverse };
  },
  'elastix-affine': async (m, f) => elastixRegister(f, m, 'affine'),
  'elastix-bspline': async (m, f) => elastixRegister(f, m, 'bspline'),
};
const LABELS = {
  before: 'before (identity)',
  'fire-affine': `FIRE-affine (${args.similarity === 'rms' ? "the paper's loss" : `${args.similarity} registration term`})`,
  fire: `FIRE (${args.similarity === 'rms' ? "the paper's loss" : `${args.similarity} registration term`})`,
  'fire-mi-affine': 'FIRE-affine, MI registration term (mixing)',
  'fire-mi': 'FIRE, MI registration term (mixing)',
  'fire-loaded': `FIRE from ${args['fire-weights']} (no training here)`,
  'voxelmorph-mi': 'VoxelMorph-MI (same steps, no affine stage)',
  'register-affine': '`registerAffine` (MI, defaults: 150/100/50 it.)',
  'register-affine-long': '`registerAffine` (MI, 600/400/200 it.)',
  register: '`registerImages` affine + deformable (MI)',
  'elastix-affine': 'elastix affine (Mattes MI)',
  'elastix-bspline': 'elastix affine + B-spline (Mattes MI)',
};

const results = [];
for (const key of args.tasks.split(',').filter(Boolean)) {
  const task = await TASKS[key]();
  if (!task) {
    console.log(`${key}: skipped, ../shared/data/read-only/brats_case was not found`);
    continue;
  }
  const nPairs = task.testZ.length * task.deformations;
  console.log(
    `${task.name}: ${task.ds.train.length} training slice(s); test slices ${task.testZ.join(',')} × ${task.deformations} = ${nPairs} pairs`,
  );
  const arms = [];
  const add = (name, runs) => {
    arms.push({ name, runs });
    const s = summariseRuns(runs.map((r) => r.rows.map((x) => x.dice ?? x.ncc)));
    console.log(
      `\r  ${LABELS[name]}: ${task.ds.labelled ? 'Dice' : 'NCC'} ${pm(s.mean, runs.length > 1 ? s.seSeeds : s.sePairs, { scale: task.ds.labelled ? 100 : 1, digits: task.ds.labelled ? 1 : 3 })}                `,
    );
  };
  add('before', [{ seed: 0, rows: await evaluate(task, null) }]);
  for (const [tag, similarity] of [
    ['fire', args.similarity],
    ['fire-mi', 'mi'],
  ]) {
    if (!methods.has(tag)) continue;
    const affineRuns = [];
    const fullRuns = [];
    for (const seed of seeds) {
      const { fire, seconds } = await trainedFire(task, seed, similarity);
      affineRuns.push({
        seed,
        trainSeconds: seconds,
        rows: await evaluate(task, (m, f) =>
          tf.tidy(() => ({ forward: affineField(fire.apply(m, f).affine, task.ds.size) })),
        ),
      });
      fullRuns.push({
        seed,
        trainSeconds: seconds,
        rows: await evaluate(task, (m, f) =>
          tf.tidy(() => {
            const o = fire.apply(m, f);
            return { forward: o.forward, inverse: o.inverse };
          }),
        ),
      });
      if (seed === seeds[0]) {
        mkdirSync(out, { recursive: true });
        const p = largeAffinePair(task.ds, task.testZ[0], 100_000 + 10 * task.testZ[0], aMin, aMax);
        await synthesisPng(join(out, `synthesis-${key}-${tag}.png`), fire, p);
        disposePair(p);
      }
      fire.dispose();
    }
    add(`${tag}-affine`, affineRuns);
    add(tag, fullRuns);
  }
  if (args['fire-weights']) {
    // a trained FIRE (e.g. the bundled weights) evaluated as it is: one run, no training
    const net = await loadRegistrationNetwork(args['fire-weights']);
    if (net.metadata.method !== 'fire')
      throw new Error(`${args['fire-weights']} is not a FIRE network`);
    add('fire-loaded', [
      {
        seed: 0,
        rows: await evaluate(task, (m, f) =>
          tf.tidy(() => {
            const o = net.predict(m, f);
            return { forward: o.forward, inverse: o.inverse };
          }),
        ),
      },
    ]);
    net.dispose();
  }
  if (methods.has('voxelmorph')) {
    const runs = [];
    for (const seed of seeds) {
      const { vxm, seconds } = await trainedVoxelMorph(task, seed);
      runs.push({
        seed,
        trainSeconds: seconds,
        rows: await evaluate(task, (m, f) => {
          const o = vxm.apply(m, f);
          return { forward: o.forward, inverse: o.inverse };
        }),
      });
      vxm.dispose();
    }
    add('voxelmorph-mi', runs);
  }
  const instance = [];
  if (methods.has('register')) instance.push('register-affine', 'register-affine-long', 'register');
  if (withElastix) instance.push('elastix-affine', 'elastix-bspline');
  for (const name of instance) add(name, [{ seed: 0, rows: await evaluate(task, INSTANCE[name]) }]);
  results.push({ key, name: task.name, labelled: task.ds.labelled, pairs: nPairs, arms });
}

/** The per-pair means over seeds of a metric. */
const perPair = (arm, k) =>
  arm.runs[0].rows.map((_, p) => meanAndSe(arm.runs.map((r) => r.rows[p][k] ?? Number.NaN)).mean);

function table(task) {
  const primary = task.labelled ? 'dice' : 'ncc';
  const scale = task.labelled ? 100 : 1;
  const digits = task.labelled ? 1 : 3;
  const fire = task.arms.find((a) => a.name === 'fire');
  const header = [
    'method',
    'Dice %',
    'NCC to truth',
    '% \\|J\\| ≤ 0',
    'inverse consistency (voxels)',
    'CPU ms / pair (median)',
    'training s',
    `Δ ${task.labelled ? 'Dice %' : 'NCC'} vs FIRE (paired, SE pairs)`,
  ];
  const cellOf = (arm, k, sc, dg) => {
    const vals = arm.runs.map((r) => r.rows.map((x) => x[k] ?? Number.NaN));
    const s = summariseRuns(vals);
    return pm(s.mean, arm.runs.length > 1 ? s.seSeeds : s.sePairs, { scale: sc, digits: dg });
  };
  const rows = task.arms.map((arm) => {
    const ms = arm.runs
      .flatMap((r) => r.rows.map((x) => x.ms))
      .filter(Number.isFinite)
      .sort((a, b) => a - b);
    const train = arm.runs.map((r) => r.trainSeconds).filter(Number.isFinite);
    const d =
      fire && arm !== fire ? pairedDifference(perPair(arm, primary), perPair(fire, primary)) : null;
    return [
      `${LABELS[arm.name]}${arm.runs.length > 1 ? ` (${arm.runs.length} seeds)` : ''}`,
      task.labelled ? cellOf(arm, 'dice', 100, 1) : '',
      cellOf(arm, 'ncc', 1, 3),
      arm.name === 'before' ? '–' : cellOf(arm, 'folding', 1, 3),
      arm.name === 'before' ? '–' : cellOf(arm, 'ic', 1, 3) || 'no inverse',
      ms.length ? ms[ms.length >> 1].toFixed(0) : '–',
      train.length ? meanAndSe(train).mean.toFixed(0) : '–',
      d ? pm(d.mean, d.se, { scale, digits }) : arm === fire ? '(reference)' : '',
    ];
  });
  return [
    `### ${task.name} (${size}×${size}), ${task.pairs} held-out pairs`,
    '',
    `| ${header.join(' | ')} |`,
    `|${header.map(() => '---').join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
  ].join('\n');
}

const minutes = (Date.now() - started) / 60_000;
const cpuMinutes = (process.cpuUsage().user + process.cpuUsage().system) / 60e6;
const [load1] = (await import('node:os')).loadavg();
const text = [
  `${quick ? 'Quick run' : 'Run'}: \`node examples/fire/src/protocol.mjs ${process.argv.slice(2).join(' ')}\`, ${minutes.toFixed(1)} min wall, ${cpuMinutes.toFixed(1)} min CPU (load ${load1.toFixed(1)} at the end), backend ${backend}. Trained arms: mean ± SE over ${seeds.length} seeds (${steps} steps each); instance-optimisation arms: mean ± SE over pairs. Δ: paired difference against FIRE per test pair (FIRE averaged over seeds) ± SE over pairs.`,
  '',
  ...results.map(table),
].join('\n');
console.log(`\n${text}`);
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'table.md'), text);
writeFileSync(
  join(out, 'results.json'),
  `${JSON.stringify({ args, backend, steps, size, seeds, aMin, aMax, rates, fireOptions, minutes, cpuMinutes, date: new Date().toISOString(), results }, null, 1)}\n`,
);
console.log(`results: ${join(out, 'table.md')}, results.json`);
