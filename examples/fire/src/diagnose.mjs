/**
 * examples/fire diagnostics: trains one FIRE on a task with the given settings and prints the
 * held-out NCC (FIRE-affine and FIRE) every `--eval-every` steps, so that settings can be
 * compared by their learning curves. Used to find why the first bundled weights did not
 * register (README, "Why the first weights did not register").
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { affineField, tf, warp } from '@regkit/core';
import { initExampleBackend } from '@regkit/example-common/backend';
import { disposePair } from '@regkit/example-common/slices';
import { localNccLoss, mutualInformationLoss } from '@regkit/losses';
import { createFire, saveRegistrationNetwork, trainFire } from '@regkit/networks';
import { DATASETS, largeAffinePair, testPairs, trainingData } from './pairs.mjs';

const { values: args } = parseArgs({
  options: {
    task: { type: 'string', default: 'itk' },
    steps: { type: 'string', default: '150' },
    'eval-every': { type: 'string', default: '50' },
    rates: { type: 'string', default: '1e-4,5e-4,1e-3' },
    'max-displacement': { type: 'string', default: '1' },
    similarity: { type: 'string', default: 'rms' },
    'similarity-weight': { type: 'string', default: '1' },
    'smooth-scale': { type: 'string', default: '1' },
    affine: { type: 'string', default: '0.2' },
    curriculum: { type: 'boolean', default: false },
    width: { type: 'string', default: '0.125' },
    'residual-blocks': { type: 'string', default: '2' },
    size: { type: 'string', default: '64' },
    seed: { type: 'string', default: '1' },
    json: { type: 'string' },
    'large-affine': { type: 'boolean', default: false },
    save: { type: 'string' },
  },
});
const steps = Number(args.steps);
const every = Number(args['eval-every']);
const [affineRate, nonRigidRate, synthesisRate] = args.rates.split(',').map(Number);
const size = Number(args.size);
const a = Number(args.affine);
const backend = await initExampleBackend();
const ds = await DATASETS(size)[args.task]();
// held-out pairs: the test slices with deformation seeds disjoint from training's; with
// --large-affine the protocol's 20–50 % affines (largeAffinePair), else randomAffine(a)
const largeTest = () => {
  const out = [];
  for (const z of ds.test)
    for (let r = 0; r < (args.task === 'itk' ? 8 : 1); r++)
      out.push(largeAffinePair(ds, z, 100_000 + 10 * z + r));
  return out;
};
const pairs = args['large-affine'] ? largeTest() : testPairs(ds, args.task === 'itk' ? 8 : 1, a);
const sims = {
  rms: undefined,
  mi: (f, w) => mutualInformationLoss(f, w),
  lncc: (f, w) => localNccLoss(f, w),
};
const fire = createFire({
  ndim: 2,
  width: Number(args.width),
  residualBlocks: Number(args['residual-blocks']),
  maxDisplacement: Number(args['max-displacement']),
  seed: Number(args.seed),
});
const nccOf = (x, y) =>
  tf.tidy(() => {
    const xm = tf.sub(x, tf.mean(x));
    const ym = tf.sub(y, tf.mean(y));
    return tf
      .div(tf.sum(tf.mul(xm, ym)), tf.sqrt(tf.mul(tf.sum(tf.square(xm)), tf.sum(tf.square(ym)))))
      .dataSync()[0];
  });
function evaluate() {
  let before = 0;
  let aff = 0;
  let full = 0;
  for (const p of pairs) {
    tf.tidy(() => {
      const o = fire.apply(p.moving, p.fixed);
      before += nccOf(p.moving, p.movingTruth);
      aff += nccOf(warp(p.moving, affineField(o.affine, ds.size)), p.movingTruth);
      full += nccOf(o.warped, p.movingTruth);
    });
  }
  const n = pairs.length;
  return { before: before / n, affine: aff / n, fire: full / n };
}
const curve = [{ step: 0, ...evaluate() }];
console.log(JSON.stringify(curve[0]));
const baseData = (s) => trainingData(ds, s, 1);
const t0 = Date.now();
const checkpointDir = mkdtempSync(join(tmpdir(), 'fire-diagnose-'));
let done = 0;
while (done < steps) {
  // one epoch of `every` steps per call, resumed from the checkpoint (Adam's state kept)
  await trainFire({
    model: fire,
    checkpointDir,
    data: (e, s) => {
      const i = e * every + s;
      const strength = args.curriculum ? a * Math.min(1, (i + 1) / (0.6 * steps)) : a;
      if (args['large-affine']) {
        // strength ramps from 0.05 to [0.2, 0.5] with --curriculum
        const hi = args.curriculum ? 0.05 + 0.45 * Math.min(1, (i + 1) / (0.6 * steps)) : 0.5;
        const lo = Math.min(0.2, hi);
        const z = ds.train[(i * 7919) % ds.train.length];
        const p = largeAffinePair(ds, z, i, lo, hi);
        tf.dispose([p.movingTruth, p.movingLabels, p.fixedLabels].filter(Boolean));
        return { moving: p.moving, fixed: p.fixed };
      }
      return baseData(strength)(i, 0);
    },
    epochs: done / every + 1,
    stepsPerEpoch: every,
    learningRates: { affine: affineRate, nonRigid: nonRigidRate, synthesis: synthesisRate },
    similarity: sims[args.similarity],
    similarityWeight: Number(args['similarity-weight']),
    regularisationWeight: Number(args['smooth-scale']),
  });
  done += every;
  const r = { step: done, s: (Date.now() - t0) / 1000, ...evaluate() };
  curve.push(r);
  console.log(JSON.stringify(r));
}
if (args.save) {
  await saveRegistrationNetwork(args.save, fire, {
    method: 'fire',
    options: fire.options,
    inputShape: ds.size,
    description: `examples/fire/src/diagnose.mjs ${process.argv.slice(2).join(' ')}: ${ds.name}, moving = modality A, ${steps} steps of one pair; held-out NCC to the truth ${curve[0].fire.toFixed(3)} → ${curve.at(-1).fire.toFixed(3)} (affine only ${curve.at(-1).affine.toFixed(3)}); inputs scaled by the 99.5th percentile of the positive voxels, clipped to [0, 1.5]`,
  });
  console.log(`saved to ${args.save}`);
}
if (args.json) writeFileSync(args.json, JSON.stringify({ args, backend, curve }, null, 1));
for (const p of pairs) disposePair(p);
rmSync(checkpointDir, { recursive: true, force: true });
