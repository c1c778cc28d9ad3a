#!/usr/bin/env node
// Writes the Colin27 T1 and its AAL labels on the grid of `regkit demo`'s 3D case, for
// elastix_vs_regkit.mjs (the demo does this in memory; elastix needs files).
//
//   node packages/cli/bench/colin27_grid.mjs --mm 2 --out-dir DIR
//     -> DIR/t1_2mm.nii.gz (float32) and DIR/aal_2mm.nii.gz (uint8)
//
// As the demo (packages/cli/src/demo.ts, coarseGrid): the grid covers the same extent with
// voxels `mm` wide (affine columns x mm/spacing, same corner voxel centre, shape
// floor((s - 1) * spacing / mm) + 1, so 91x109x91 at 2 mm); the T1 is smoothed by a Gaussian
// of sigma = (mm/spacing - 1) / 2 voxels, then resampled trilinearly; the labels are resampled
// with nearest neighbour. With --mm 1 the files are copies of the 1 mm originals (181x217x181).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { gaussianSmooth, tf } from '@regkit/core';
import { defaultHeader, readNifti, resampleToReference, volumeLike, writeNifti } from '@regkit/io';
import { demoDataDir, setupBackend } from '../dist/index.js';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const mm = Number(arg('mm', '2'));
const outDir = arg('out-dir', '.');
mkdirSync(outDir, { recursive: true });
if (!(mm >= 1 && mm <= 8)) {
  process.stderr.write(`colin27_grid: --mm must be in [1, 8], got ${arg('mm')}\n`);
  process.exit(2);
}

await setupBackend(process.env.REGKIT_BACKEND || undefined);
const data = demoDataDir();
const t1 = await readNifti(join(data, 'colin27_ch2_t1.nii.gz'));
const aal = await readNifti(join(data, 'colin27_aal_labels.nii.gz'));

const spatial = t1.data.shape.slice(1, -1);
const factors = t1.spacing.map((s) => mm / s);
const shape = spatial.map((s, k) => Math.floor(((s - 1) * t1.spacing[k]) / mm) + 1);
const affine = t1.affine.slice();
for (let r = 0; r < 3; r++) {
  for (let c = 0; c < 3; c++) affine[r * 4 + c] = t1.affine[r * 4 + c] * factors[c];
}
const grid = {
  data: tf.zeros([1, ...shape, 1]),
  affine,
  spacing: shape.map(() => mm),
  header: defaultHeader(shape, 1),
};
const sigma = t1.spacing.map((s) => Math.max(0, (mm / s - 1) * 0.5));
const smooth = volumeLike(t1, gaussianSmooth(t1.data, sigma));
const t1c = resampleToReference(smooth, grid);
const aalc = resampleToReference(aal, grid, { interpolation: 'nearest' });

const tag = `${mm}mm`;
const t1Path = join(outDir, `t1_${tag}.nii.gz`);
const aalPath = join(outDir, `aal_${tag}.nii.gz`);
await writeNifti(t1Path, t1c, { datatype: 'float32' });
await writeNifti(aalPath, aalc, { datatype: 'uint8' });
process.stdout.write(
  `${JSON.stringify({ t1: t1Path, labels: aalPath, shape, spacing: grid.spacing, sigma })}\n`,
);
