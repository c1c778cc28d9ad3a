/**
 * examples/fire diagnostics: trains one FIRE on a task with the given settings and prints the
 * held-out NCC (FIRE-affine and FIRE) every `--eval-every` steps, so that settings can be
 * compared by their learning curves. Used to find why the first bundled weights did not
 * register (README, "Why the first weights did not register").
 *
 * With `--validate N` (ITK task) it also prints, every `--eval-every` steps, the error against
 * a known field on N validation draws (deformation seeds disjoint from training's and from
 * `evaluate-weights.mjs`'s test draws): the undeformed T1 onto the PD deformed by a random
 * B-spline, mean |u − u_true| over the head (fixed > 0.05, voxels) for the training-like
 * deformation (|u| ≤ 4 voxels, 16-voxel spacing: `val`) and for a small one like the CLI
 * test's (|u| ≤ 1.4 voxels, 10-voxel spacing: `valSmall`), and % |J| ≤ 0; `--save` then keeps
 * the step with the lowest mean of the two errors (ratios to the identity's) instead of the
 * last. `--init DIR` starts from a saved FIRE (fine-tuning; the tanh bound may differ),
 * `--regulariser diffusion` uses the diffusion loss of the non-rigid fields (normalised units,
 * G's grid) with weight `--smooth-scale` in place of the paper's λ·Laplacian energy, and
 * `--affine-uniform` draws each training pair's affine strength uniformly in [0, --affine];
 * `--fixed-only` trains on pairs like the known-field draws (the moving T1 moved by the affine
 * alone, the fixed PD deformed by a B-spline of maximum displacement uniform in [0, 4] voxels)
 * instead of independent B-splines on both; `--zero-affine p` gives a fraction p of the
 * training pairs no affine; `--control-spacings 10,16` draws the fixed B-spline's control
 * spacing (voxels) from the list (with `--fixed-only`); `--step-offset` shifts the training
 * seeds.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { affineField, mulberry32, randomSmoothField, tf, warp } from '@regkit/core';
import { initExampleBackend } from '@regkit/example-common/backend';
import { disposePair } from '@regkit/example-common/slices';
import { diffusionLoss, localNccLoss, mutualInformationLoss } from '@regkit/losses';
import { foldingPercent } from '@regkit/metrics';
import { createFire, readWeights, saveRegistrationNetwork, trainFire } from '@regkit/networks';
import { DATASETS, largeAffinePair, randomAffine, testPairs, trainingData } from './pairs.mjs';

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
    init: { type: 'string' },
    regulariser: { type: 'string', default: 'laplacian' },
    'affine-uniform': { type: 'boolean', default: false },
    validate: { type: 'string', default: '0' },
    'step-offset': { type: 'string', default: '0' },
    'fixed-only': { type: 'boolean', default: false },
    'zero-affine': { type: 'string', default: '0' },
    'control-spacings': { type: 'string', default: '16' },
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
if (args.init) {
  // fine-tuning: the weights of a saved FIRE of the same width and blocks
  const { weights } = await readWeights(args.init);
  fire.setWeights(weights);
  tf.dispose(Object.values(weights));
}
if (!['laplacian', 'diffusion'].includes(args.regulariser)) {
  throw new Error(`--regulariser must be laplacian or diffusion, got ${args.regulariser}`);
}
const regulariser =
  args.regulariser === 'diffusion' ? (output) => diffusionLoss(output.forward) : undefined;
const offset = Number(args['step-offset']);
const spacings = args['control-spacings'].split(',').map(Number);
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
// validation draws with a known field (seeds 300_001 + 2r: disjoint from training's
// 2i + 1, 2i + 2 and from evaluate-weights.mjs's 100_001 + 2r)
const nValidate = Number(args.validate);
const validation = [];
if (nValidate > 0) {
  const s0 = ds.slices.get(ds.test[0]);
  for (const [key, maxDisplacement, controlSpacing] of [
    ['val', 4, 16],
    ['valSmall', 1.4, 10],
  ]) {
    for (let r = 0; r < nValidate; r++) {
      const truth = randomSmoothField(ds.size, {
        maxDisplacement,
        controlSpacing,
        seed: 300_001 + 2 * r + (key === 'val' ? 0 : 1000),
      });
      const fixed = warp(s0.fixed, truth);
      const mask = tf.tidy(() => tf.cast(tf.greater(tf.reshape(fixed, ds.size), 0.05), 'float32'));
      validation.push({ key, moving: s0.moving, truth, fixed, mask });
    }
  }
}
const headMean = (t, mask) =>
  tf.tidy(
    () =>
      tf.div(tf.sum(tf.mul(tf.sqrt(tf.sum(tf.square(t), -1)), mask)), tf.sum(mask)).dataSync()[0],
  );
async function validate() {
  const acc = {};
  for (const v of validation) {
    const o = fire.apply(v.moving, v.fixed);
    const err = tf.sub(o.forward, v.truth);
    if (!acc[v.key]) acc[v.key] = { before: 0, after: 0, folding: 0, n: 0 };
    const a = acc[v.key];
    a.before += headMean(v.truth, v.mask);
    a.after += headMean(err, v.mask);
    a.folding += await foldingPercent(o.forward);
    a.n += 1;
    tf.dispose([err, ...Object.values(o)]);
  }
  const out = {};
  for (const [k, a] of Object.entries(acc)) {
    out[`${k}Before`] = a.before / a.n;
    out[`${k}Error`] = a.after / a.n;
    out[`${k}Folding`] = a.folding / a.n;
  }
  if (validation.length)
    out.score = (out.valError / out.valBefore + out.valSmallError / out.valSmallBefore) / 2;
  return out;
}
const metadata = (curve) => ({
  method: 'fire',
  options: fire.options,
  inputShape: ds.size,
  description: `examples/fire/src/diagnose.mjs ${process.argv.slice(2).join(' ')}: ${ds.name}, moving = modality A, step ${curve.at(-1).step} of ${steps} of one pair; held-out NCC to the truth ${curve[0].fire.toFixed(3)} → ${curve.at(-1).fire.toFixed(3)} (affine only ${curve.at(-1).affine.toFixed(3)})${curve.at(-1).score === undefined ? '' : `; validation field error ${curve.at(-1).valBefore.toFixed(2)} → ${curve.at(-1).valError.toFixed(2)} voxels (small deformations ${curve.at(-1).valSmallBefore.toFixed(2)} → ${curve.at(-1).valSmallError.toFixed(2)})`}; inputs scaled by the 99.5th percentile of the positive voxels, clipped to [0, 1.5]`,
});
let best = Number.POSITIVE_INFINITY;
async function keepBest(curve) {
  const r = curve.at(-1);
  if (!args.save || r.score === undefined || !(r.score < best)) return;
  best = r.score;
  await saveRegistrationNetwork(args.save, fire, metadata(curve));
  console.log(`saved step ${r.step} to ${args.save} (validation score ${r.score.toFixed(3)})`);
}
const curve = [{ step: 0, ...evaluate(), ...(await validate()) }];
await keepBest(curve);
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
      const i = e * every + s + offset;
      const strength =
        mulberry32(70_000 + i)() < Number(args['zero-affine'])
          ? 0
          : args.curriculum
            ? a * Math.min(1, (i - offset + 1) / (0.6 * steps))
            : args['affine-uniform']
              ? a * mulberry32(50_000 + i)()
              : a;
      if (args['large-affine']) {
        // strength ramps from 0.05 to [0.2, 0.5] with --curriculum
        const hi = args.curriculum ? 0.05 + 0.45 * Math.min(1, (i + 1) / (0.6 * steps)) : 0.5;
        const lo = Math.min(0.2, hi);
        const z = ds.train[(i * 7919) % ds.train.length];
        const p = largeAffinePair(ds, z, i, lo, hi);
        tf.dispose([p.movingTruth, p.movingLabels, p.fixedLabels].filter(Boolean));
        return { moving: p.moving, fixed: p.fixed };
      }
      if (args['fixed-only']) {
        // like the known-field test draws: the moving T1 undeformed (affine only), the fixed
        // PD deformed by a B-spline of maximum displacement uniform in [0, 4] voxels
        const z = ds.train[(i * 7919) % ds.train.length];
        const sl = ds.slices.get(z);
        return tf.tidy(() => {
          const uf = randomSmoothField(ds.size, {
            maxDisplacement: 4 * mulberry32(60_000 + i)(),
            controlSpacing: spacings[Math.floor(mulberry32(80_000 + i)() * spacings.length)],
            seed: 2 * i + 2,
          });
          const aff = affineField(randomAffine(i + 7777, ds.size, strength), ds.size);
          return { moving: warp(sl.moving, aff), fixed: warp(sl.fixed, uf) };
        });
      }
      return baseData(strength)(i, 0);
    },
    epochs: done / every + 1,
    stepsPerEpoch: every,
    learningRates: { affine: affineRate, nonRigid: nonRigidRate, synthesis: synthesisRate },
    similarity: sims[args.similarity],
    similarityWeight: Number(args['similarity-weight']),
    regularisationWeight: Number(args['smooth-scale']),
    regulariser,
  });
  done += every;
  const r = { step: done, s: (Date.now() - t0) / 1000, ...evaluate(), ...(await validate()) };
  curve.push(r);
  console.log(JSON.stringify(r));
  await keepBest(curve);
}
if (args.save && !validation.length) {
  await saveRegistrationNetwork(args.save, fire, metadata(curve));
  console.log(`saved to ${args.save}`);
}
if (args.json) writeFileSync(args.json, JSON.stringify({ args, backend, curve }, null, 1));
for (const p of pairs) disposePair(p);
for (const v of validation) tf.dispose([v.truth, v.fixed, v.mask]);
rmSync(checkpointDir, { recursive: true, force: true });
