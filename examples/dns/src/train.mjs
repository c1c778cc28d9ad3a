#!/usr/bin/env node
/**
 * Trains the bundled 2D MASR-Net (self-supervised, `trainMasrNet`) on the slices of
 * src/data.mjs and saves it with its model card metadata.
 *
 *   node src/train.mjs                       # 600 steps, writes results/networks/masrnet-2d
 *   node src/train.mjs --steps 600 --bundle  # also to packages/networks/weights/masrnet-2d
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { tf } from '@regkit/core';
import { initExampleBackend } from '@regkit/example-common/backend';
import { epochsForStepsOrExit } from '@regkit/example-common/steps';
import { BUNDLED_WEIGHTS, createMasrNet, saveMasrNet, trainMasrNet } from '@regkit/networks';
import { trainingImages } from './data.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    steps: { type: 'string', default: '600' },
    samples: { type: 'string', default: '2048' },
    'learning-rate': { type: 'string', default: '1e-3' },
    out: { type: 'string', default: join(here, '../results') },
    bundle: { type: 'boolean', default: false },
    backend: { type: 'string' },
  },
});
const STEPS_PER_EPOCH = 50;
const epochs = epochsForStepsOrExit(args.steps, STEPS_PER_EPOCH);
const lr = Number(args['learning-rate']);
const samples = Number(args.samples);
const backend = await initExampleBackend(args.backend);
console.log(`backend ${backend}; ${args.steps} steps; Adam lr ${lr}; N^k = ${samples}`);
const images = await trainingImages();
console.log(`${images.length} training slices`);

const MASR_OPTIONS = { ndim: 2 };
const model = createMasrNet(MASR_OPTIONS);
const t0 = Date.now();
const result = await trainMasrNet({
  model,
  epochs,
  stepsPerEpoch: STEPS_PER_EPOCH,
  samples,
  learningRate: lr,
  seed: 19,
  checkpointDir: join(
    args.out,
    'checkpoints',
    `masrnet-s${args.steps}-n${samples}-lr${lr}-${backend}`,
  ),
  // a fixed pseudo-random order over the slices
  data: (epoch, step) =>
    tf.clone(images[((epoch * STEPS_PER_EPOCH + step) * 7919) % images.length].image),
  onProgress: (p) => {
    if (p.step % 10 === 9) {
      process.stdout.write(
        `\r  epoch ${p.epoch + 1}/${p.epochs} step ${p.step + 1} loss ${p.loss.toFixed(3)} (${(p.elapsedMs / 1000).toFixed(0)} s)   `,
      );
    }
  },
});
const minutes = (Date.now() - t0) / 60000;
console.log(
  `\ntrained in ${minutes.toFixed(1)} min; loss per epoch ${result.history.map((v) => v.toFixed(3)).join(', ')}`,
);
const sources = [...new Set(images.map((i) => i.source))];
const metadata = {
  method: 'masrnet',
  options: MASR_OPTIONS,
  description:
    `MASR-Net 2D trained self-supervised by examples/dns/src/train.mjs (${args.steps} steps of Adam lr ${lr}, ` +
    `N^k = ${samples}, tau 0.07, two Bezier views, ${backend}, ${minutes.toFixed(1)} min) on ${images.length} axial slices of: ${sources.join(', ')}. ` +
    'Held out: the ITK/BrainWeb T1 and PD slices, and BraTS slices within 2 of z = 5 mod 10.',
  trainingSources: sources,
  steps: Number(args.steps),
  lossHistory: result.history,
};
const outDir = join(args.out, 'networks', 'masrnet-2d');
await saveMasrNet(outDir, model, metadata);
console.log(`saved ${outDir}`);
if (args.bundle) {
  const dir = fileURLToPath(BUNDLED_WEIGHTS.masrnet);
  await saveMasrNet(dir, model, metadata);
  console.log(`bundled ${dir}`);
}
for (const { image } of images) image.dispose();
model.dispose();
