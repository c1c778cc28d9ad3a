/**
 * examples/fire: FIRE (Wang, Yang & Papanastasiou) in small, on multi-modal brain slices with
 * a random affine plus a non-rigid misalignment, against `regkit register` (registerImages:
 * affine, and affine + deformable, Parzen MI) and a VoxelMorph trained with MI at the same
 * budget. Prints and writes the table; `--bundle` writes the ITK T1 → PD FIRE to
 * packages/networks/weights/fire-2d (the weights of `regkit register --method fire`).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { affineField, tf, warp } from '@regkit/core';
import { initExampleBackend } from '@regkit/example-common/backend';
import { cell, markdownTable, summarise } from '@regkit/example-common/evaluate';
import { disposePair } from '@regkit/example-common/slices';
import { epochsForStepsOrExit } from '@regkit/example-common/steps';
import { mutualInformationLoss } from '@regkit/losses';
import { foldingPercent, inverseConsistencyError, meanDice, ncc } from '@regkit/metrics';
import {
  BUNDLED_WEIGHTS,
  createFire,
  createVoxelMorph,
  saveRegistrationNetwork,
  trainFire,
  trainRegistration,
} from '@regkit/networks';
import { registerAffine, registerImages } from '@regkit/register';
import { DATASETS, synthesisPng, testPairs, trainingData } from './pairs.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    tasks: { type: 'string', default: 'itk,brats' },
    steps: { type: 'string', default: '300' },
    width: { type: 'string', default: '0.125' },
    'residual-blocks': { type: 'string', default: '2' },
    size: { type: 'string', default: '64' },
    affine: { type: 'string', default: '0.2' },
    'lr-scale': { type: 'string', default: '10' },
    deformations: { type: 'string', default: '2' },
    methods: { type: 'string', default: 'fire,voxelmorph,register' },
    similarity: { type: 'string', default: 'rms' },
    out: { type: 'string', default: join(here, '../results') },
    bundle: { type: 'boolean', default: false },
    backend: { type: 'string' },
  },
});
const STEPS_PER_EPOCH = 25;
const steps = Number(args.steps);
const epochs = epochsForStepsOrExit(args.steps, STEPS_PER_EPOCH);
const width = Number(args.width);
const residualBlocks = Number(args['residual-blocks']);
const size = Number(args.size);
const affineStrength = Number(args.affine);
const lrScale = Number(args['lr-scale']);
const rates = { affine: 1e-5 * lrScale, nonRigid: 5e-5 * lrScale, synthesis: 1e-4 * lrScale };
const deformations = Number(args.deformations);
const methods = new Set(args.methods.split(','));
if (!['rms', 'mi'].includes(args.similarity)) {
  console.error(`--similarity must be rms (the paper's) or mi, got '${args.similarity}'`);
  process.exit(2);
}
/** FIRE's registration accuracy term: the paper's RMS on synthesised images, or Parzen MI (mixing). */
const fireSimilarity =
  args.similarity === 'mi' ? (fx, w) => mutualInformationLoss(fx, w) : undefined;
const fireTag = args.similarity === 'mi' ? 'fire-mi' : 'fire';

const backend = await initExampleBackend(args.backend);
console.log(
  `backend ${backend}; ${steps} steps; FIRE width ${width}, ${residualBlocks} residual blocks, rates ${JSON.stringify(rates)}`,
);

async function evaluate(pairs, register) {
  const rows = [];
  for (const pair of pairs) {
    const row = {};
    let out = null;
    if (register) {
      const t0 = performance.now();
      out = await register(pair.moving, pair.fixed);
      await out.forward.data();
      row.ms = performance.now() - t0;
    }
    const field = out?.forward ?? tf.zeros([1, ...pair.moving.shape.slice(1, -1), 2]);
    const warped = warp(pair.moving, field);
    row.ncc = await ncc(warped, pair.movingTruth);
    if (pair.movingLabels) {
      const wl = warp(pair.movingLabels, field, { interpolation: 'nearest' });
      row.dice = await meanDice(wl, pair.fixedLabels);
      wl.dispose();
    }
    row.folding = await foldingPercent(field);
    if (out?.inverse) {
      row.inverseConsistency = (await inverseConsistencyError(out.forward, out.inverse)).mean;
    }
    tf.dispose([warped, field]);
    if (out) tf.dispose(Object.values(out).filter((t) => t instanceof tf.Tensor));
    rows.push(row);
  }
  const result = { pairs: rows.length };
  for (const k of ['ncc', 'dice', 'folding', 'inverseConsistency', 'ms']) {
    result[k] = summarise(rows.map((r) => r[k] ?? Number.NaN));
  }
  if (register) result.ms.median = rows.map((r) => r.ms).sort((a, b) => a - b)[rows.length >> 1];
  return result;
}

const progressOf = (tag) => (p) => {
  if (p.step === p.stepsPerEpoch - 1) {
    process.stdout.write(
      `\r  ${tag}: epoch ${p.epoch + 1}/${p.epochs} loss ${p.loss.toFixed(4)}   `,
    );
  }
};

async function runTask(key, dataset) {
  const rows = [];
  const pairs = testPairs(dataset, deformations, affineStrength);
  const add = async (method, register, extra = {}) => {
    const r = await evaluate(pairs, register);
    rows.push({ task: key, method, ...extra, ...r });
    console.log(
      `\r  ${method}: Dice ${cell(r.dice, { scale: 100, withStd: false })} NCC ${cell(r.ncc, { digits: 3, withStd: false })} folding ${cell(r.folding, { digits: 3, withStd: false })}% ms ${r.ms?.median?.toFixed(0) ?? '–'}`,
    );
  };
  await add('before', null);

  const ckpt = (m) =>
    join(
      args.out,
      'checkpoints',
      `${key}-${m}-s${steps}-${size}-w${width}-r${residualBlocks}-x${lrScale}-a${affineStrength}-${backend}`,
    );
  if (methods.has('fire')) await runFire(key, dataset, pairs, add, ckpt);
  if (methods.has('voxelmorph')) await runVoxelMorph(dataset, add, ckpt(`vxm-mi`), key);
  if (methods.has('register')) {
    // instance optimisation: affine only, and affine + deformable, Parzen MI
    await add('register-affine', async (m, f) => {
      const r = await registerAffine(f, m, { similarity: 'mi' });
      return { forward: r.forward };
    });
    await add('register', async (m, f) => {
      const r = await registerImages(f, m, { similarity: 'mi', inverse: true });
      return { forward: r.forward, inverse: r.inverse };
    });
  }
  for (const p of pairs) disposePair(p);
  return rows;
}

/** Trains FIRE (three Adams; the registration term RMS or MI) and evaluates FIRE-affine and FIRE. */
async function runFire(key, dataset, pairs, add, ckpt) {
  const options = { ndim: 2, width, residualBlocks, seed: 1 };
  const fire = createFire(options);
  const t0 = Date.now();
  await trainFire({
    model: fire,
    data: trainingData(dataset, affineStrength, STEPS_PER_EPOCH),
    epochs,
    stepsPerEpoch: STEPS_PER_EPOCH,
    learningRates: rates,
    similarity: fireSimilarity,
    checkpointDir: ckpt(fireTag),
    onProgress: progressOf(`${key} ${fireTag}`),
  });
  const fireSeconds = (Date.now() - t0) / 1000;
  const metadata = {
    method: 'fire',
    options,
    inputShape: dataset.size,
    description: `examples/fire: ${dataset.name} (moving = modality A), ${steps} steps of one pair (random affine ${affineStrength} + B-spline |u| ≤ 4), three Adams ${JSON.stringify(rates)}, registration term ${args.similarity === 'mi' ? 'Parzen MI (mixing)' : 'RMS on synthesised images (the paper)'}; inputs scaled by the 99.5th percentile of the positive voxels, clipped to [0, 1.5]`,
  };
  await saveRegistrationNetwork(join(args.out, 'networks', `${key}-${fireTag}`), fire, metadata);
  if (args.bundle && key === 'itk') {
    const dir = fileURLToPath(BUNDLED_WEIGHTS.fire);
    await saveRegistrationNetwork(dir, fire, metadata);
    console.log(`\n  bundled weights written to ${dir}`);
  }
  mkdirSync(args.out, { recursive: true });
  await synthesisPng(
    join(args.out, `synthesis-${key}-${fireTag}.png`),
    fire,
    pairs[pairs.length >> 1],
  );
  await add(
    `${fireTag}-affine`,
    (m, f) =>
      tf.tidy(() => {
        const o = fire.apply(m, f);
        return { forward: affineField(o.affine, dataset.size) };
      }),
    { trainSeconds: fireSeconds },
  );
  await add(
    fireTag,
    (m, f) =>
      tf.tidy(() => {
        const o = fire.apply(m, f);
        return { forward: o.forward, inverse: o.inverse };
      }),
    { trainSeconds: fireSeconds },
  );
  fire.dispose();
}

/** VoxelMorph trained with MI at the same budget (no affine stage, as VoxelMorph). */
async function runVoxelMorph(dataset, add, checkpointDir, key) {
  const vxm = createVoxelMorph({ ndim: 2, seed: 1 });
  const t0 = Date.now();
  await trainRegistration({
    model: vxm,
    data: trainingData(dataset, affineStrength, STEPS_PER_EPOCH),
    epochs,
    stepsPerEpoch: STEPS_PER_EPOCH,
    similarity: (fx, w) => mutualInformationLoss(fx, w),
    learningRate: 1e-3,
    checkpointDir,
    onProgress: progressOf(`${key} VoxelMorph-MI`),
  });
  const vxmSeconds = (Date.now() - t0) / 1000;
  await add(
    'voxelmorph-mi',
    (m, f) => {
      const o = vxm.apply(m, f);
      return { forward: o.forward, inverse: o.inverse };
    },
    { trainSeconds: vxmSeconds },
  );
  vxm.dispose();
}

const LABELS = {
  before: 'before (identity)',
  'fire-affine': `FIRE-affine (width ${width})`,
  fire: `FIRE (width ${width})`,
  'fire-mi-affine': `FIRE-affine, MI registration term (width ${width})`,
  'fire-mi': `FIRE, MI registration term (width ${width})`,
  'voxelmorph-mi': 'VoxelMorph-MI (same steps)',
  'register-affine': '`regkit register` affine (MI)',
  register: '`regkit register` affine + deformable (MI)',
};

const loaders = DATASETS(size);
const all = [];
const names = {};
for (const key of args.tasks.split(',').filter(Boolean)) {
  const ds = await loaders[key]();
  if (!ds) {
    console.log(`${key}: skipped, ../shared/data/read-only/brats_case was not found`);
    continue;
  }
  names[key] = `${ds.name} (${ds.size.join('×')})`;
  console.log(
    `${ds.name}: ${ds.train.length} training slice(s), ${ds.test.length} test slice(s) × ${deformations} deformations`,
  );
  all.push(...(await runTask(key, ds)));
}

const tables = Object.keys(names).map((key) => {
  const header = [
    'method',
    'Dice %',
    'NCC to truth',
    '% |J| ≤ 0',
    'inverse consistency (voxels)',
    'ms (median)',
    'training s',
  ];
  const body = all
    .filter((r) => r.task === key)
    .map((r) => [
      LABELS[r.method],
      cell(r.dice, { scale: 100 }),
      cell(r.ncc, { digits: 3 }),
      r.method === 'before' ? '–' : cell(r.folding, { digits: 3, withStd: false }),
      r.method === 'before' ? '–' : cell(r.inverseConsistency, { digits: 3 }) || 'no inverse',
      r.method === 'before' ? '–' : r.ms.median.toFixed(0),
      r.trainSeconds ? r.trainSeconds.toFixed(0) : '–',
    ]);
  const n = all.find((r) => r.task === key).pairs;
  return `### ${names[key]}, ${n} held-out pairs\n\n${markdownTable(header, body)}\n`;
});
const table = tables.join('\n');
console.log(`\n${table}`);
mkdirSync(args.out, { recursive: true });
writeFileSync(
  join(args.out, 'results.json'),
  `${JSON.stringify({ backend, steps, width, residualBlocks, size, affineStrength, rates, similarity: args.similarity, date: new Date().toISOString(), rows: all }, null, 1)}\n`,
);
writeFileSync(join(args.out, 'table.md'), table);
console.log(`results: ${join(args.out, 'results.json')}, ${join(args.out, 'table.md')}`);
