#!/usr/bin/env node
/**
 * SITReg in small (Honkamaa & Marttinen): a symmetric, inverse-consistent, topology-preserving
 * multi-resolution network trained on real brain slices with synthetic deformations, beside a
 * plain VoxelMorph-style U-Net (displacement output) trained the same way (LNCC, window 7, in
 * both directions for SITReg, with a diffusion regulariser).
 *
 *   node src/run.mjs                       # train both, evaluate, print the table
 *   node src/run.mjs --steps 200 --tasks colin
 *
 * Tasks: the VoxelMorph test T1 with its aseg labels (../shared/data/read-only/voxelmorph_test,
 * read-only; skipped when absent) and Colin27 T1 with AAL labels (bundled). Prints Dice
 * before/after, HD95, folding %, inverse-consistency error, cycle-consistency error (inputs
 * swapped) and inference time, and writes results/results.json and results/table.md. The
 * SITReg network of the first task is saved to results/networks/ and, with --bundle, to the
 * weights `regkit register --method sitreg` uses by default.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { initExampleBackend } from '@regkit/example-common/backend';
import { cell, evaluateMethod, markdownTable } from '@regkit/example-common/evaluate';
import { colinDataset, trainingPair, voxelmorphDataset } from '@regkit/example-common/slices';
import { epochsForStepsOrExit } from '@regkit/example-common/steps';
import { localNccLoss } from '@regkit/losses';
import {
  BUNDLED_WEIGHTS,
  createSitreg,
  createVoxelMorph,
  saveRegistrationNetwork,
  trainRegistration,
  trainSitreg,
} from '@regkit/networks';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    tasks: { type: 'string', default: 'vxm,colin' },
    methods: { type: 'string', default: 'sitreg,unet' },
    steps: { type: 'string', default: '600' },
    width: { type: 'string', default: '0.25' },
    'learning-rate': { type: 'string', default: '1e-3' },
    out: { type: 'string', default: join(here, '../results') },
    bundle: { type: 'boolean', default: false },
    backend: { type: 'string' },
  },
});
const STEPS_PER_EPOCH = 50;
const steps = Number(args.steps);
const epochs = epochsForStepsOrExit(args.steps, STEPS_PER_EPOCH);
const lr = Number(args['learning-rate']);
const width = Number(args.width);

const backend = await initExampleBackend(args.backend);
console.log(`backend ${backend}; ${epochs} epochs × ${STEPS_PER_EPOCH} steps; Adam lr ${lr}`);

const LABELS = {
  sitreg: `SITReg (width ${width})`,
  unet: 'U-Net baseline (VoxelMorph, displacement)',
};

async function run(dataset, taskKey, methodKey) {
  const tag = `${taskKey}-${methodKey}-s${steps}`;
  // a rerun resumes the checkpoint of the same settings only (and on the same backend: a
  // resumed run is then bit-identical to an uninterrupted one)
  const checkpointDir = join(args.out, 'checkpoints', `${tag}-w${width}-lr${lr}-${backend}`);
  const data = (epoch, step) => trainingPair(dataset, epoch * STEPS_PER_EPOCH + step);
  const progress = (p) => {
    if (p.step === p.stepsPerEpoch - 1) {
      process.stdout.write(
        `\r  ${tag}: epoch ${p.epoch + 1}/${p.epochs} loss ${p.loss.toFixed(4)}   `,
      );
    }
  };
  const t0 = Date.now();
  let model;
  let register;
  let saved;
  if (methodKey === 'sitreg') {
    const options = { ndim: 2, width, seed: 1 };
    model = createSitreg(options);
    await trainSitreg({
      model,
      data,
      epochs,
      stepsPerEpoch: STEPS_PER_EPOCH,
      learningRate: lr,
      checkpointDir,
      onProgress: progress,
    });
    register = (m, f) => model.apply(m, f);
    saved = { method: 'sitreg', options };
  } else if (methodKey === 'unet') {
    const options = { ndim: 2, diffeomorphic: false, seed: 1 };
    model = createVoxelMorph(options);
    await trainRegistration({
      model,
      data,
      epochs,
      stepsPerEpoch: STEPS_PER_EPOCH,
      similarity: (f, w) => localNccLoss(w, f, { window: 7 }),
      regularisationWeight: 1,
      learningRate: lr,
      checkpointDir,
      onProgress: progress,
    });
    register = (m, f) => model.apply(m, f);
    saved = { method: 'voxelmorph', options };
  } else {
    throw new Error(`unknown method '${methodKey}' (sitreg, unet)`);
  }
  const trainSeconds = (Date.now() - t0) / 1000;
  const metadata = {
    ...saved,
    inputShape: dataset.size,
    description: `examples/sitreg: ${dataset.name}, ${LABELS[methodKey]}, ${steps} steps, Adam lr ${lr}; inputs scaled by the 99.5th percentile of the positive voxels`,
  };
  await saveRegistrationNetwork(join(args.out, 'networks', tag), model, metadata);
  if (args.bundle && methodKey === 'sitreg' && !bundled) {
    bundled = true;
    const bundledDir = fileURLToPath(BUNDLED_WEIGHTS.sitreg);
    await saveRegistrationNetwork(bundledDir, model, metadata);
    console.log(`\n  bundled weights written to ${bundledDir}`);
  }
  const metrics = await evaluateMethod(dataset, register, { cycle: true });
  model.dispose();
  process.stdout.write(
    `\r  ${tag}: Dice ${cell(metrics.dice, { scale: 100, withStd: false })}, folding ${cell(metrics.folding, { digits: 4, withStd: false })}%, cycle ${cell(metrics.cycleConsistency, { digits: 4, withStd: false })}; trained ${trainSeconds.toFixed(0)} s\n`,
  );
  return { task: taskKey, method: methodKey, steps, trainSeconds, ...metrics };
}

let bundled = false;
const loaders = { vxm: voxelmorphDataset, colin: colinDataset };
const rows = [];
const datasets = {};
for (const key of args.tasks.split(',').filter(Boolean)) {
  const ds = await loaders[key]();
  if (!ds) {
    console.log(`${key}: skipped, ../shared/data/read-only/voxelmorph_test was not found`);
    continue;
  }
  datasets[key] = ds;
  console.log(
    `${ds.name}: ${ds.train.length} training slices, ${ds.test.length} test slices × 3 deformations, ${ds.size.join('×')}`,
  );
  rows.push({ task: key, method: 'before', ...(await evaluateMethod(ds, null)) });
  for (const m of args.methods.split(',').filter(Boolean)) rows.push(await run(ds, key, m));
}

const tables = Object.entries(datasets).map(([key, ds]) => {
  const header = [
    'method',
    'Dice %',
    'HD95 (voxels)',
    '% |J| ≤ 0',
    'inverse consistency |φ∘φ⁻¹ − id|',
    'cycle consistency |φ_AB∘φ_BA − id|',
    'swap max |φ_BA − φ_AB⁻¹|',
    'ms',
  ];
  const body = rows
    .filter((r) => r.task === key)
    .map((r) => {
      const before = r.method === 'before';
      return [
        before ? 'before (identity)' : LABELS[r.method],
        cell(r.dice, { scale: 100 }),
        cell(r.hd95, { digits: 2 }),
        before ? '–' : cell(r.folding, { digits: 4, withStd: false }),
        before ? '–' : cell(r.inverseConsistency, { digits: 4 }) || 'no inverse',
        before ? '–' : cell(r.cycleConsistency, { digits: 4 }),
        before ? '–' : r.swapError ? r.swapError.mean.toExponential(1) : 'no inverse',
        before ? '–' : r.ms.median.toFixed(0),
      ];
    });
  return `### ${ds.name} (${ds.size.join('×')}, ${rows.find((r) => r.task === key).pairs} test pairs)\n\n${markdownTable(header, body)}\n`;
});
const table = tables.join('\n');
console.log(`\n${table}`);
mkdirSync(args.out, { recursive: true });
writeFileSync(
  join(args.out, 'results.json'),
  `${JSON.stringify({ backend, steps, width, learningRate: lr, date: new Date().toISOString(), rows }, null, 1)}\n`,
);
writeFileSync(join(args.out, 'table.md'), table);
console.log(`results: ${join(args.out, 'results.json')}, ${join(args.out, 'table.md')}`);
