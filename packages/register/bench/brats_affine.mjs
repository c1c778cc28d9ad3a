// T1 → FLAIR on the shared BraTS case with a known affine (12°, 8 % scale, 5 voxels) and a
// random smooth deformation: Dice of the tumour and brain masks before/after, and time.
// Usage (after `pnpm --filter @regkit/io --filter @regkit/register build`):
//   node packages/register/bench/brats_affine.mjs [cpu|wasm] [downsample=2]
// Skips when the data are absent.
import { existsSync } from 'node:fs';
import { initBackend, randomSmoothField, resizeImage, tf, warp } from '@regkit/core';
import * as kernels from '@regkit/kernels';
import { readNifti } from '../../io/dist/index.js';
import {
  affineDisplacement,
  normalizeIntensity,
  registerAffine,
  registerImages,
} from '../dist/index.js';

const dir = '/work/shared/data/read-only/brats_case';
if (!existsSync(`${dir}/t1n.nii.gz`)) {
  console.log(`skipped: ${dir} is absent`);
  process.exit(0);
}
const backend = process.argv[2] ?? 'wasm';
const down = Number(process.argv[3] ?? 2);
await initBackend(backend, { kernels });

const read = async (name) => (await readNifti(`${dir}/${name}`)).data;
const [t1Full, flairFull, segFull] = await Promise.all(
  ['t1n.nii.gz', 't2f_flair.nii.gz', 'seg_auto_BraTS25_2.nii.gz'].map(read),
);
const full = t1Full.shape.slice(1, -1);
const shape = full.map((s) => Math.round((s - 1) / down) + 1);
const t1 = await normalizeIntensity(resizeImage(t1Full, shape));
const flair = await normalizeIntensity(resizeImage(flairFull, shape));
// labels: nearest resampling of the tumour mask and the brain mask (T1 > 0)
const gridOf = (s) => tf.zeros([1, ...s, 3]);
const toShape = (mask) =>
  tf.tidy(() => {
    const z = gridOf(shape);
    const scale = full.map((s, k) => (s - 1) / (shape[k] - 1));
    // displacement taking level voxel x to full voxel D x: (D − I) x
    const idx = tf.add(z, tf.mul(tf.tensor1d(scale.map((s) => s - 1)), identity(shape)));
    return warp(mask, idx, { interpolation: 'nearest' });
  });
function identity(s) {
  const n = s.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n * 3);
  for (let i = 0, o = 0; i < s[0]; i++)
    for (let j = 0; j < s[1]; j++)
      for (let k = 0; k < s[2]; k++) {
        out[o++] = i;
        out[o++] = j;
        out[o++] = k;
      }
  return tf.tensor(out, [1, ...s, 3]);
}
const tumour = toShape(tf.cast(tf.greater(segFull, 0), 'float32'));
const brain = toShape(tf.cast(tf.greater(t1Full, 0), 'float32'));
tf.dispose([t1Full, flairFull, segFull]);

// known transform: 12° about a skew axis, 8 % scale, 5 voxels (of the full grid) translation
const deg = 12;
const ax = [0.2, 1, 0.4].map((v, _, a) => v / Math.hypot(...a));
const [c, s] = [Math.cos((deg * Math.PI) / 180), Math.sin((deg * Math.PI) / 180)];
const [x, y, z] = ax;
const rot = [
  [c + x * x * (1 - c), x * y * (1 - c) - z * s, x * z * (1 - c) + y * s],
  [y * x * (1 - c) + z * s, c + y * y * (1 - c), y * z * (1 - c) - x * s],
  [z * x * (1 - c) - y * s, z * y * (1 - c) + x * s, c + z * z * (1 - c)],
];
const a = rot.map((row) => row.map((v) => v * 1.08));
const ctr = shape.map((n) => (n - 1) / 2);
const tc = [5, -5, 3].map((v) => v / down);
const m = tf.tensor3d([
  a.map((row, i) => [...row, tc[i] + ctr[i] - row.reduce((acc, v, j) => acc + v * ctr[j], 0)]),
]);
const smooth = randomSmoothField(shape, {
  maxDisplacement: 3 / down,
  controlSpacing: 24 / down,
  seed: 7,
});
const truth = tf.tidy(() => {
  const af = affineDisplacement(m, shape);
  // truth(x) = a(x + s(x)) − x
  const lin = tf.reshape(tf.slice(m, [0, 0, 0], [1, 3, 3]), [3, 3]);
  return tf.add(
    af,
    tf.reshape(tf.matMul(tf.reshape(smooth, [-1, 3]), lin, false, true), smooth.shape),
  );
});
// fixed: the FLAIR moved by the truth; moving: the T1 on the original grid
const fixed = warp(flair, truth);
const fixedMasks = [tumour, brain].map((l) => warp(l, truth, { interpolation: 'nearest' }));

async function dice(p, q) {
  const t = tf.tidy(() => tf.div(tf.mul(2, tf.sum(tf.mul(p, q))), tf.add(tf.sum(p), tf.sum(q))));
  const v = (await t.data())[0];
  t.dispose();
  return v;
}
async function report(name, forward, ms) {
  const d = [];
  for (const [i, l] of [tumour, brain].entries()) {
    const w = forward ? warp(l, forward, { interpolation: 'nearest' }) : l;
    d.push(await dice(w, fixedMasks[i]));
    if (forward) w.dispose();
  }
  let rms = '';
  if (forward) {
    const e = tf.tidy(() => tf.sqrt(tf.mean(tf.sum(tf.square(tf.sub(forward, truth)), -1))));
    rms = ` | RMS error ${((await e.data())[0] * down).toFixed(2)} mm`;
    e.dispose();
  }
  console.log(
    `${name}: Dice tumour ${d[0].toFixed(3)}, brain ${d[1].toFixed(3)}${rms}${ms ? ` | ${(ms / 1000).toFixed(1)} s` : ''}`,
  );
}
console.log(`${backend}, grid ${shape.join('×')} (1/${down} of ${full.join('×')})`);
await report('before', null, 0);
let t0 = performance.now();
const aff = await registerAffine(fixed, t1, { similarity: 'mi' });
await report('registerAffine (mi)', aff.forward, performance.now() - t0);
t0 = performance.now();
const both = await registerImages(fixed, t1, { similarity: 'mi' });
await report('registerImages (affine + velocity, mi)', both.forward, performance.now() - t0);
t0 = performance.now();
const only = await registerImages(fixed, t1, { similarity: 'mi', affine: false });
await report('registerImages (velocity only, mi)', only.forward, performance.now() - t0);
