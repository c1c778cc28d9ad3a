#!/usr/bin/env node
/**
 * INNReg in small (Guo et al.): an invertible translation network T (modality X → Y) trained
 * jointly with a registration network R (residual U-Net), on real multi-modal brain slices with
 * synthetic B-spline misalignments, beside a VoxelMorph-style network trained with LNCC and the
 * same network trained with MI, and the paper's ablation (cross-translation on/off, barrier
 * NMI against plain NMI). Only R registers at test time.
 *
 *   node src/run.mjs                          # everything (BraTS skipped without the data)
 *   node src/run.mjs --tasks itk --steps 100 --methods innreg,vm-lncc
 *
 * Prints SSIM, NCC (warped moving against the moving image deformed like the fixed one), Dice
 * and HD95 (tumour labels), folding % and inference time, before and after, and writes
 * results/results.json and results/table.md. Training resumes from results/checkpoints/.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { initExampleBackend } from '@regkit/example-common/backend';
import { cell, evaluateMethod, markdownTable } from '@regkit/example-common/evaluate';
import { bratsDataset, itkPairDataset, trainingPair } from '@regkit/example-common/slices';
import { epochsForStepsOrExit } from '@regkit/example-common/steps';
import { localNccLoss, mutualInformationLoss } from '@regkit/losses';
import {
  createInnreg,
  createVoxelMorph,
  saveRegistrationNetwork,
  trainInnreg,
  trainRegistration,
} from '@regkit/networks';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    tasks: { type: 'string', default: 't2,itk' },
    methods: {
      type: 'string',
      default: 'innreg,innreg-no-cross,innreg-plain-nmi,innreg-code-barrier,vm-lncc,vm-mi',
    },
    steps: { type: 'string', default: '200' },
    'translator-blocks': { type: 'string', default: '4' },
    subnet: { type: 'string', default: 'dense' },
    'learning-rate': { type: 'string', default: '1e-3' },
    out: { type: 'string', default: join(here, '../results') },
    backend: { type: 'string' },
  },
});
const STEPS_PER_EPOCH = 25;
const steps = Number(args.steps);
const epochs = epochsForStepsOrExit(args.steps, STEPS_PER_EPOCH);
const lr = Number(args['learning-rate']);
const translatorBlocks = Number(args['translator-blocks']);
const subnet = args.subnet;

const backend = await initExampleBackend(args.backend);
console.log(
  `backend ${backend}; ${epochs} epochs × ${STEPS_PER_EPOCH} steps; Adam lr ${lr}; translator ${translatorBlocks} ${subnet} blocks`,
);

/** The methods: label, how to build, train and apply each. */
const METHODS = {
  innreg: { label: 'INNReg (T + R, barrier NMI, cross-translation)', innreg: {} },
  'innreg-no-cross': {
    label: 'INNReg without cross-translation',
    innreg: { crossTranslation: false },
  },
  'innreg-plain-nmi': { label: 'INNReg with plain NMI', innreg: { nmi: 'plain' } },
  'innreg-code-barrier': {
    label: "INNReg, the official code's barrier −log(b − (1 − MI))",
    innreg: { barrierForm: 'code' },
  },
  'vm-lncc': {
    label: 'VoxelMorph-diff, LNCC (window 9)',
    similarity: (f, w) => localNccLoss(w, f, { window: 9 }),
  },
  'vm-mi': {
    label: 'VoxelMorph-diff, MI (Parzen)',
    similarity: (f, w) => mutualInformationLoss(w, f),
  },
};

async function run(dataset, taskKey, methodKey) {
  const method = METHODS[methodKey];
  if (!method)
    throw new Error(`unknown method '${methodKey}' (${Object.keys(METHODS).join(', ')})`);
  const tag = `${taskKey}-${methodKey}-s${steps}`;
  const checkpointDir = join(args.out, 'checkpoints', tag);
  const data = (epoch, step) => trainingPair(dataset, epoch * STEPS_PER_EPOCH + step);
  const t0 = Date.now();
  const progress = (p) => {
    if (p.step === p.stepsPerEpoch - 1) {
      process.stdout.write(
        `\r  ${tag}: epoch ${p.epoch + 1}/${p.epochs} loss ${p.loss.toFixed(4)}   `,
      );
    }
  };
  let register;
  let model;
  let saved;
  if (method.innreg) {
    // a smaller translator than the paper's 8 DDWConv blocks, to train in minutes on 2 cores
    const options = { ndim: 2, translator: { blocks: translatorBlocks, subnet }, seed: 1 };
    model = createInnreg(options);
    await trainInnreg({
      model,
      data,
      epochs,
      stepsPerEpoch: STEPS_PER_EPOCH,
      learningRate: lr,
      loss: method.innreg,
      checkpointDir,
      onProgress: progress,
    });
    register = (m, f) => model.apply(m, f);
    saved = { method: 'innreg', options };
  } else {
    const options = { ndim: 2, seed: 1 };
    model = createVoxelMorph(options);
    await trainRegistration({
      model,
      data,
      epochs,
      stepsPerEpoch: STEPS_PER_EPOCH,
      similarity: method.similarity,
      regularisationWeight: 1,
      learningRate: lr,
      checkpointDir,
      onProgress: progress,
    });
    register = (m, f) => model.apply(m, f);
    saved = { method: 'voxelmorph', options };
  }
  const trainSeconds = (Date.now() - t0) / 1000;
  await saveRegistrationNetwork(join(args.out, 'networks', tag), model, {
    ...saved,
    inputShape: dataset.size,
    description: `examples/innreg: ${dataset.name}, ${method.label}, ${steps} steps, Adam lr ${lr}`,
  });
  const metrics = await evaluateMethod(dataset, register, evaluation(dataset));
  model.dispose();
  process.stdout.write(
    `\r  ${tag}: SSIM ${cell(metrics.ssim, { digits: 3, withStd: false })}, Dice ${cell(metrics.dice, { scale: 100, withStd: false })}, folding ${cell(metrics.folding, { digits: 4, withStd: false })}%; trained ${trainSeconds.toFixed(0)} s\n`,
  );
  return { task: taskKey, method: methodKey, steps, trainSeconds, ...metrics };
}

/** A single-slice dataset (the ITK pair) is tested on 20 held-out deformations, others on 3 per slice. */
const evaluation = (ds) => ({ deformationsPerSlice: ds.test.length === 1 ? 20 : 3 });

const loaders = { t2: () => bratsDataset('t2w'), itk: itkPairDataset };
const rows = [];
const datasets = {};
for (const key of args.tasks.split(',').filter(Boolean)) {
  const ds = await loaders[key]();
  if (!ds) {
    console.log(`${key}: skipped, the read-only BraTS case was not found (set REGKIT_BRATS_DIR)`);
    continue;
  }
  datasets[key] = ds;
  console.log(
    `${ds.name}: ${ds.train.length} training slice(s), ${ds.test.length} test slice(s) × ${evaluation(ds).deformationsPerSlice} deformations, ${ds.size.join('×')}`,
  );
  rows.push({ task: key, method: 'before', ...(await evaluateMethod(ds, null, evaluation(ds))) });
  for (const m of args.methods.split(',').filter(Boolean)) rows.push(await run(ds, key, m));
}

const tables = Object.entries(datasets).map(([key, ds]) => {
  const header = ['method', 'SSIM', 'NCC', ...(ds.labelled ? ['Dice %', 'HD95 (voxels)'] : [])];
  header.push('% |J| ≤ 0', 'ms');
  const body = rows
    .filter((r) => r.task === key)
    .map((r) => [
      r.method === 'before' ? 'before (identity)' : METHODS[r.method].label,
      cell(r.ssim, { digits: 3 }),
      cell(r.ncc, { digits: 3 }),
      ...(ds.labelled ? [cell(r.dice, { scale: 100 }), cell(r.hd95, { digits: 2 })] : []),
      r.method === 'before' ? '–' : cell(r.folding, { digits: 4, withStd: false }),
      r.method === 'before' ? '–' : r.ms.median.toFixed(0),
    ]);
  return `### ${ds.name} (${ds.size.join('×')}, ${rows.find((r) => r.task === key).pairs} test pairs)\n\n${markdownTable(header, body)}\n`;
});
const table = tables.join('\n');
console.log(`\n${table}`);
mkdirSync(args.out, { recursive: true });
writeFileSync(
  join(args.out, 'results.json'),
  `${JSON.stringify({ backend, steps, learningRate: lr, date: new Date().toISOString(), rows }, null, 1)}\n`,
);
writeFileSync(join(args.out, 'table.md'), table);
console.log(`results: ${join(args.out, 'results.json')}, ${join(args.out, 'table.md')}`);
