#!/usr/bin/env node
/**
 * How the λ of IO-DNS was checked (not part of the table): IO-DNS on BraTS T1 → T2 pairs of
 * *training* slices (z = 50, 60, 70; never test slices), with the preset's λ (the paper's, as
 * is) times a factor, or with `--converted` the paper's λ moved to voxel units. Prints Dice,
 * folding and time per factor (factor 0 also prints the initial Dice of each pair).
 *
 *   node src/tune.mjs --factors 1,3
 *   node src/tune.mjs --converted --factors 1,100,10000
 */
import { parseArgs } from 'node:util';
import { tf, warp } from '@regkit/core';
import { initExampleBackend } from '@regkit/example-common/backend';
import { summarise } from '@regkit/example-common/evaluate';
import { bratsDataset, disposePair, makePair } from '@regkit/example-common/slices';
import { foldingPercent, meanDice } from '@regkit/metrics';
import { loadMasrNet } from '@regkit/networks';
import { dnsRegistrationOptions, registerImages } from '@regkit/register';

const { values: args } = parseArgs({
  options: {
    factors: { type: 'string', default: '1,10,100' },
    smoothing: { type: 'string', default: '1' },
    lr: { type: 'string', default: '1' },
    converted: { type: 'boolean', default: false },
    weights: { type: 'string' },
    sigma: { type: 'string', default: '1' },
  },
});
await initExampleBackend();
const { model } = await loadMasrNet(args.weights);
const ds = await bratsDataset('t2w');
if (!ds) {
  console.log('BraTS (read-only) absent');
  process.exit(0);
}
for (const factor of args.factors.split(',').map(Number)) {
  const dice = [];
  const folding = [];
  const t0 = performance.now();
  for (const z of [50, 60, 70]) {
    const pair = makePair(ds, z, 7 + z);
    const o = dnsRegistrationOptions(ds.size, model, { sigma: Number(args.sigma) });
    // --converted: λ moved to voxel units like the learning rate, λ·(2/(n − 1))² per level
    const mean = ds.size.reduce((a, b) => a + b, 0) / ds.size.length;
    const toVoxels = (l) => (2 / (mean / 2 ** (2 - l) - 1)) ** 2;
    o.regularisationWeight = o.regularisationWeight.map(
      (w, l) => w * factor * (args.converted ? toVoxels(l) : 1),
    );
    o.learningRate = o.learningRate.map((w) => w * Number(args.lr));
    o.fieldSmoothing = Number(args.smoothing);
    if (factor === 0) {
      const l0 = warp(pair.movingLabels, tf.zeros([1, ...ds.size, 2]), {
        interpolation: 'nearest',
      });
      console.log('initial', await meanDice(l0, pair.fixedLabels));
    }
    const r = await registerImages(pair.fixed, pair.moving, {
      ...o,
      affine: false,
      returnVelocity: false,
    });
    const wl = warp(pair.movingLabels, r.forward, { interpolation: 'nearest' });
    dice.push(await meanDice(wl, pair.fixedLabels));
    folding.push(await foldingPercent(r.forward));
    tf.dispose([wl, r.forward]);
    disposePair(pair);
  }
  const d = summarise(dice);
  console.log(
    `λ × ${factor}: Dice ${(100 * d.mean).toFixed(1)}, folding ${summarise(folding).mean.toFixed(3)} %, ${((performance.now() - t0) / 3000).toFixed(1)} s/pair`,
  );
}
model.dispose();
