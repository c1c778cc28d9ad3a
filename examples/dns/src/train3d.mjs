#!/usr/bin/env node
/**
 * Trains the bundled 3D MASR-Net (self-supervised, `trainMasrNet`) on random 24³ crops of the
 * volumes of src/data3d.mjs (about 3 mm per voxel) and saves it with its model card metadata.
 * Resumes from results/checkpoints/masrnet3d-… (the folder does not depend on --steps, so a
 * longer run continues a shorter one).
 *
 *   node src/train3d.mjs --steps 100            # writes results/networks/masrnet-3d
 *   node src/train3d.mjs --steps 200 --bundle   # continues, also to packages/networks/weights/masrnet-3d
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { tf } from '@regkit/core';
import { initExampleBackend } from '@regkit/example-common/backend';
import { epochsForStepsOrExit } from '@regkit/example-common/steps';
import { BUNDLED_WEIGHTS, createMasrNet, saveMasrNet, trainMasrNet } from '@regkit/networks';
import { trainingVolumes3d } from './data3d.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    steps: { type: 'string', default: '200' },
    samples: { type: 'string', default: '512' },
    crop: { type: 'string', default: '24' },
    'learning-rate': { type: 'string', default: '1e-3' },
    out: { type: 'string', default: join(here, '../results') },
    bundle: { type: 'boolean', default: false },
    backend: { type: 'string' },
  },
});
const STEPS_PER_EPOCH = 25;
const epochs = epochsForStepsOrExit(args.steps, STEPS_PER_EPOCH);
const lr = Number(args['learning-rate']);
const samples = Number(args.samples);
const crop = Number(args.crop);
const backend = await initExampleBackend(args.backend);
console.log(
  `backend ${backend}; ${args.steps} steps; Adam lr ${lr}; N^k = ${samples}; ${crop}³ crops`,
);
const volumes = await trainingVolumes3d();
console.log(`${volumes.length} training volumes`);

/** A small 3D MASR-Net: the 2D one's layout at half the widths (CPU training budget). */
const MASR3D_OPTIONS = { ndim: 3, widths: [8, 16, 16, 16], hiddenChannels: 8 };
const model = createMasrNet(MASR3D_OPTIONS);

/** Deterministic crop of step i: volume (i·7919 mod n) and an offset from a hash of i. */
function cropOf(i) {
  const { image } = volumes[(i * 7919) % volumes.length];
  const shape = image.shape.slice(1, 4);
  let h = (i * 2654435761) >>> 0;
  const begin = shape.map((s) => {
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
    return s > crop ? h % (s - crop + 1) : 0;
  });
  return tf.tidy(() =>
    tf.slice(image, [0, ...begin, 0], [1, ...shape.map((s) => Math.min(s, crop)), 1]),
  );
}

const t0 = Date.now();
const result = await trainMasrNet({
  model,
  epochs,
  stepsPerEpoch: STEPS_PER_EPOCH,
  samples,
  learningRate: lr,
  seed: 19,
  checkpointDir: join(args.out, 'checkpoints', `masrnet3d-n${samples}-c${crop}-lr${lr}-${backend}`),
  data: (epoch, step) => cropOf(epoch * STEPS_PER_EPOCH + step),
  onProgress: (p) => {
    if (p.step % 5 === 4) {
      console.log(
        `  epoch ${p.epoch + 1}/${p.epochs} step ${p.step + 1} loss ${p.loss.toFixed(3)} (${(p.elapsedMs / 1000).toFixed(0)} s)`,
      );
    }
  },
});
const minutes = (Date.now() - t0) / 60000;
console.log(
  `trained in ${minutes.toFixed(1)} min (this run; resumed from epoch ${result.resumedFromEpoch}); loss per epoch ${result.history.map((v) => v.toFixed(3)).join(', ')}`,
);
const sources = volumes.map((v) => v.source);
const metadata = {
  method: 'masrnet',
  options: MASR3D_OPTIONS,
  description:
    `MASR-Net 3D trained self-supervised by examples/dns/src/train3d.mjs (${args.steps} steps of Adam lr ${lr}, ` +
    `N^k = ${samples}, tau 0.07, two Bezier views, ${crop}^3 crops at about 3 mm, ${backend}) on ${volumes.length} volumes: ${sources.join(', ')}. ` +
    'Held out: BraTS and the VoxelMorph T1 (never trained on).',
  trainingSources: sources,
  steps: Number(args.steps),
  lossHistory: result.history,
};
const outDir = join(args.out, 'networks', 'masrnet-3d');
await saveMasrNet(outDir, model, metadata);
console.log(`saved ${outDir}`);
if (args.bundle) {
  const dir = fileURLToPath(BUNDLED_WEIGHTS['masrnet-3d']);
  await saveMasrNet(dir, model, metadata);
  console.log(`bundled ${dir}`);
}
for (const { image } of volumes) image.dispose();
model.dispose();
