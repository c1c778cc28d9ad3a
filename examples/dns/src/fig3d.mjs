#!/usr/bin/env node
/**
 * Fig. 4 of the paper in small, in 3D: on the aligned BraTS T2 (fixed) and T1 (moving) volumes
 * of run3d.mjs (36×44×36, undeformed, so the true match of a voxel is the same voxel), the
 * cosine similarity of the fixed feature at one voxel (the strongest edge in the central third
 * of the middle axial slice) to the moving feature at every voxel, shown on the axial slice
 * through that voxel, for MIND-SSC, the bundled 3D MASR-Net and the random-init one.
 *
 *   node src/fig3d.mjs        # writes results/3d/similarity3d.png
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tf } from '@regkit/core';
import { initExampleBackend } from '@regkit/example-common/backend';
import { encodePng } from '@regkit/io';
import { mindSsc } from '@regkit/losses';
import { createMasrNet, loadMasrNet } from '@regkit/networks';
import { bratsVolumeDataset, SIZES } from './data3d.mjs';

const here = dirname(fileURLToPath(import.meta.url));
await initExampleBackend();
const ds = await bratsVolumeDataset('t2w', SIZES.full);
if (!ds) {
  console.log('BraTS (read-only) absent: no figure');
  process.exit(0);
}
const { model: net } = await loadMasrNet({ ndim: 3 });
const random = createMasrNet({ ...net.options, seed: 7 });
const { fixed, moving } = ds.slices.get(0);
const [X, Y, Z] = ds.size;
const z0 = Math.floor(Z / 2);
const at = (x, y, z) => (x * Y + y) * Z + z;
const f = await fixed.data();
let best = -1;
let p = [X >> 1, Y >> 1];
for (let x = Math.floor(X / 3); x < (2 * X) / 3; x++) {
  for (let y = Math.floor(Y / 3); y < (2 * Y) / 3; y++) {
    const g = Math.abs(f[at(x + 1, y, z0)] - f[at(x, y, z0)]);
    if (g > best) [best, p] = [g, [x, y]];
  }
}
/** Cosine of the fixed feature at p (slice z0) to every moving feature, on slice z0. */
async function similarity(extract) {
  const t = tf.tidy(() => {
    const ff = extract(fixed);
    const fm = extract(moving);
    const c = ff.shape[4];
    const v = tf.slice(ff, [0, p[0], p[1], z0, 0], [1, 1, 1, 1, c]);
    const slice = tf.slice(fm, [0, 0, 0, z0, 0], [1, X, Y, 1, c]);
    const dot = tf.sum(tf.mul(slice, v), -1);
    return tf.div(dot, tf.maximum(tf.mul(tf.norm(slice, 'euclidean', -1), tf.norm(v)), 1e-8));
  });
  const values = await t.data();
  t.dispose();
  return values;
}
const sliceOf = async (vol) => {
  const t = tf.slice(vol, [0, 0, 0, z0, 0], [1, X, Y, 1, 1]);
  const v = await t.data();
  t.dispose();
  return v;
};
const panels = [
  await sliceOf(fixed),
  await sliceOf(moving),
  await similarity((x) => mindSsc(x)),
  await similarity((x) => net.apply(x)),
  await similarity((x) => random.apply(x)),
];
const scale = 4;
const [pw, ph] = [Y * scale, X * scale];
const width = pw * panels.length;
const rgba = new Uint8Array(width * ph * 4);
panels.forEach((values, k) => {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
  for (let r = 0; r < ph; r++) {
    for (let c = 0; c < pw; c++) {
      const v = (values[Math.floor(r / scale) * Y + Math.floor(c / scale)] - lo) / (hi - lo || 1);
      // heat maps black → red → yellow → white; images grey
      const rgb =
        k >= 2
          ? [Math.min(1, 3 * v), Math.min(1, Math.max(0, 3 * v - 1)), Math.max(0, 3 * v - 2)]
          : [v, v, v];
      rgba.set([...rgb.map((u) => Math.round(255 * u)), 255], (r * width + k * pw + c) * 4);
    }
  }
  // the marked voxel (fixed) or its true match: a cyan cross
  for (let d = -5; d <= 5; d++) {
    for (const [r, c] of [
      [p[0] * scale + 2, p[1] * scale + 2 + d],
      [p[0] * scale + 2 + d, p[1] * scale + 2],
    ]) {
      if (r >= 0 && r < ph && c >= 0 && c < pw)
        rgba.set([0, 255, 255, 255], (r * width + k * pw + c) * 4);
    }
  }
});
const out = join(here, '../results/3d');
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'similarity3d.png'), await encodePng({ width, height: ph, data: rgba }));
console.log(`voxel (${p.join(', ')}, ${z0}); wrote ${join(out, 'similarity3d.png')}`);
net.dispose();
random.dispose();
for (const t of Object.values(ds.slices.get(0))) t?.dispose();
