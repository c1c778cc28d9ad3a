/**
 * Brain slices for the MINE example: real images, synthetic deformations.
 *
 * - mono-modal: Colin27 T1 axial slices with the AAL atlas (bundled with @regkit/cli),
 *   resized to 96×112 (≈1.9 mm);
 * - multi-modal: the BraTS case of ../shared/data/read-only/brats_case (T1 → FLAIR, T1 → T2),
 *   axial slices resized to 96×96 (2.5 mm), labels = tumour classes 1–3 + the rest of the brain
 *   as 4. Read-only data: never copied into the repository; skipped when absent.
 *
 * Every pair deforms the fixed and the moving slice by two independent random smooth fields
 * (cubic B-spline, 16-voxel control spacing, |u| ≤ 4 voxels: fold-free), so registration must
 * undo both; the labels follow their images (nearest neighbour). Test slices are every 10th
 * slice (z ≡ 5 mod 10); training slices are at least 3 slices away from any test slice.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomSmoothField, resizeImage, tf, warp } from '@regkit/core';
import { readNifti } from '@regkit/io';

const here = dirname(fileURLToPath(import.meta.url));
export const BUNDLED = resolve(here, '../../../packages/cli/data');

/** Where the read-only BraTS case is: REGKIT_BRATS_DIR, else ../shared/data/read-only/brats_case above the repository. */
export function bratsDir() {
  if (process.env.REGKIT_BRATS_DIR) return process.env.REGKIT_BRATS_DIR;
  let dir = resolve(here, '../../..');
  for (let i = 0; i < 4; i++) {
    const candidate = join(dir, 'shared/data/read-only/brats_case');
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  return null;
}

/** Volume data `[X, Y, Z]` as a Float32Array plus its shape. */
async function load(path) {
  const v = await readNifti(path);
  const shape = v.data.shape.slice(1, 4);
  const data = Float32Array.from(await v.data.data());
  v.data.dispose();
  return { data, shape };
}

/** Axial slice z of a `[X, Y, Z]` volume as a `[X, Y]` array. */
function slice({ data, shape }, z) {
  const [X, Y, Z] = shape;
  const out = new Float32Array(X * Y);
  for (let x = 0; x < X; x++)
    for (let y = 0; y < Y; y++) out[x * Y + y] = data[(x * Y + y) * Z + z];
  return out;
}

/** Nearest-neighbour resize of a label slice (aligned corners). */
function resizeLabels(labels, [X, Y], [H, W]) {
  const out = new Float32Array(H * W);
  for (let i = 0; i < H; i++) {
    const x = Math.round((i * (X - 1)) / (H - 1));
    for (let j = 0; j < W; j++)
      out[i * W + j] = labels[x * Y + Math.round((j * (Y - 1)) / (W - 1))];
  }
  return out;
}

/** 99.5th percentile of the positive values (robust intensity scale). */
function scaleOf(values) {
  const pos = values.filter((v) => v > 0).sort();
  return pos.length ? pos[Math.floor(0.995 * (pos.length - 1))] : 1;
}

/** Image slice resized with core's antialiased resizeImage and scaled to about [0, 1]. */
function imageSlice(vol, z, size, scale) {
  const [X, Y] = vol.shape;
  return tf.tidy(() =>
    tf.clipByValue(
      tf.div(resizeImage(tf.tensor(slice(vol, z), [1, X, Y, 1]), size), scale),
      0,
      1.5,
    ),
  );
}

function splitSlices(zs) {
  const test = zs.filter((z) => z % 10 === 5);
  const train = zs.filter((z) => test.every((t) => Math.abs(z - t) >= 3));
  return { train, test };
}

/**
 * A dataset: fixed/moving image slices and labels, already resized, for the given slice range.
 * `modalities` = [moving, fixed] file paths (the same for mono-modal).
 */
async function makeDataset(name, movingPath, fixedPath, labelsOf, zs, size) {
  const moving = await load(movingPath);
  const fixed = fixedPath === movingPath ? moving : await load(fixedPath);
  const sm = scaleOf(moving.data);
  const sf = scaleOf(fixed.data);
  const [X, Y] = moving.shape;
  const { train, test } = splitSlices(zs);
  const slices = new Map();
  for (const z of zs) {
    slices.set(z, {
      moving: imageSlice(moving, z, size, sm),
      fixed: imageSlice(fixed, z, size, sf),
      labels: tf.tensor(resizeLabels(labelsOf(z), [X, Y], size), [1, ...size, 1]),
    });
  }
  return { name, size, train, test, slices };
}

/** Mono-modal Colin27 T1 → T1 with AAL labels (always available: bundled). */
export async function colinDataset() {
  const labels = await load(join(BUNDLED, 'colin27_aal_labels.nii.gz'));
  return makeDataset(
    'Colin27 T1 → T1 (AAL)',
    join(BUNDLED, 'colin27_ch2_t1.nii.gz'),
    join(BUNDLED, 'colin27_ch2_t1.nii.gz'),
    (z) => slice(labels, z),
    range(40, 141),
    [96, 112],
  );
}

/** Multi-modal BraTS T1 → `target` ('t2f_flair' or 't2w'), or null when the data are absent. */
export async function bratsDataset(target) {
  const dir = bratsDir();
  if (!dir) return null;
  const seg = await load(join(dir, 'seg_auto_BraTS25_2.nii.gz'));
  const t1 = await load(join(dir, 't1n.nii.gz'));
  const labelsOf = (z) => {
    const s = slice(seg, z);
    const b = slice(t1, z);
    return s.map((v, i) => (v > 0 ? v : b[i] > 0 ? 4 : 0));
  };
  return makeDataset(
    `BraTS T1 → ${target === 't2w' ? 'T2' : 'FLAIR'}`,
    join(dir, 't1n.nii.gz'),
    join(dir, `${target}.nii.gz`),
    labelsOf,
    range(40, 121),
    [96, 96],
  );
}

function range(a, b) {
  return Array.from({ length: b - a }, (_, i) => a + i);
}

/** Random smooth fold-free field for a pair (seeded). */
function field(size, seed) {
  return randomSmoothField(size, { maxDisplacement: 4, controlSpacing: 16, seed });
}

/**
 * The pair (slice z, seed): moving and fixed deformed independently, with their labels.
 * Returns tensors the caller disposes.
 */
export function makePair(dataset, z, seed) {
  const s = dataset.slices.get(z);
  return tf.tidy(() => {
    const um = field(dataset.size, 2 * seed + 1);
    const uf = field(dataset.size, 2 * seed + 2);
    return {
      moving: warp(s.moving, um),
      fixed: warp(s.fixed, uf),
      movingLabels: warp(s.labels, um, { interpolation: 'nearest' }),
      fixedLabels: warp(s.labels, uf, { interpolation: 'nearest' }),
    };
  });
}
