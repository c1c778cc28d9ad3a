/**
 * Real brain slices with synthetic deformations, shared by the example apps.
 *
 * Datasets (every one a set of axial slices, resized, intensities scaled to about [0, 1]):
 * - `colinDataset()`: Colin27 T1 → T1 with the AAL atlas (bundled with @regkit/cli), 96×112;
 * - `bratsDataset(target)`: the BraTS case of ../shared/data/read-only/brats_case, T1 →
 *   `target` ('t2f_flair' | 't2w'), labels = tumour classes 1–3 + the rest of the brain as 4,
 *   96×96 (read-only data: never copied into the repository; null when absent);
 * - `voxelmorphDataset()`: the VoxelMorph test T1 with its FreeSurfer aseg labels
 *   (../shared/data/read-only/voxelmorph_test, read-only), 96×112 slices along its third axis;
 * - `itkPairDataset()`: the bundled ITK/BrainWeb T1 and proton-density slice, one aligned
 *   multi-modal 2D pair, 96×112, no labels.
 *
 * Every pair deforms the fixed and the moving slice by two independent random smooth fields
 * (cubic B-spline, 16-voxel control spacing, |u| ≤ 4 voxels by default: fold-free), so a
 * registration must undo both; labels follow their images (nearest neighbour). The moving
 * image also comes deformed like the fixed one (`movingTruth`): the moving modality in the
 * fixed frame, the reference of SSIM/NCC after registration. Test slices are every 10th slice
 * (z ≡ 5 mod 10); training slices are at least 3 slices away from any test slice. A dataset
 * of a single slice trains and tests on it with disjoint deformation seeds.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomSmoothField, resizeImage, tf, warp } from '@regkit/core';
import { readNifti } from '@regkit/io';

const here = dirname(fileURLToPath(import.meta.url));
/** The real images bundled in the repository (with their attribution in its README). */
export const BUNDLED = resolve(here, '../../../packages/cli/data');

/**
 * The folder `../shared/data/read-only/<name>` above the repository (or `$REGKIT_SHARED_DATA/
 * read-only/<name>`), or null when absent. Read-only data are only read, never copied.
 */
export function readOnlyDir(name) {
  if (process.env.REGKIT_SHARED_DATA) {
    const dir = join(process.env.REGKIT_SHARED_DATA, 'read-only', name);
    return existsSync(dir) ? dir : null;
  }
  let dir = resolve(here, '../../..');
  for (let i = 0; i < 4; i++) {
    const candidate = join(dir, 'shared/data/read-only', name);
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  return null;
}

/** Where the read-only BraTS case is: REGKIT_BRATS_DIR, else `readOnlyDir('brats_case')`. */
export function bratsDir() {
  return process.env.REGKIT_BRATS_DIR ?? readOnlyDir('brats_case');
}

/** Volume data `[X, Y, Z]` (Z = 1 for a 2D image) as a Float32Array plus its shape. */
export async function loadVolume(path) {
  const v = await readNifti(path);
  const shape = v.data.shape.slice(1, -1);
  while (shape.length < 3) shape.push(1);
  const data = Float32Array.from(await v.data.data());
  v.data.dispose();
  return { data, shape };
}

/** Slice z of a `[X, Y, Z]` volume as a `[X, Y]` array. */
export function volumeSlice({ data, shape }, z) {
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
export function scaleOf(values) {
  const pos = values.filter((v) => v > 0).sort();
  return pos.length ? pos[Math.floor(0.995 * (pos.length - 1))] : 1;
}

/** Image slice resized with core's antialiased resizeImage and scaled to about [0, 1]. */
function imageSlice(vol, z, size, scale) {
  const [X, Y] = vol.shape;
  return tf.tidy(() =>
    tf.clipByValue(
      tf.div(resizeImage(tf.tensor(volumeSlice(vol, z), [1, X, Y, 1]), size), scale),
      0,
      1.5,
    ),
  );
}

function splitSlices(zs) {
  if (zs.length === 1) return { train: zs, test: zs };
  const test = zs.filter((z) => z % 10 === 5);
  const train = zs.filter((z) => test.every((t) => Math.abs(z - t) >= 3));
  return { train, test };
}

/**
 * A dataset of slices `zs`: moving/fixed image slices and labels (or null), resized to `size`.
 * `labelsOf(z)` returns the label slice at the volume's resolution, or is null.
 */
async function makeDataset(name, movingPath, fixedPath, labelsOf, zs, size, split = splitSlices) {
  const moving = await loadVolume(movingPath);
  const fixed = fixedPath === movingPath ? moving : await loadVolume(fixedPath);
  const sm = scaleOf(moving.data);
  const sf = scaleOf(fixed.data);
  const [X, Y] = moving.shape;
  const { train, test, validation = [] } = split(zs);
  const slices = new Map();
  for (const z of zs) {
    slices.set(z, {
      moving: imageSlice(moving, z, size, sm),
      fixed: imageSlice(fixed, z, size, sf),
      labels: labelsOf ? tf.tensor(resizeLabels(labelsOf(z), [X, Y], size), [1, ...size, 1]) : null,
    });
  }
  return { name, size, train, validation, test, slices, labelled: Boolean(labelsOf) };
}

/** Mono-modal Colin27 T1 → T1 with AAL labels (always available: bundled). */
export async function colinDataset() {
  const labels = await loadVolume(join(BUNDLED, 'colin27_aal_labels.nii.gz'));
  return makeDataset(
    'Colin27 T1 → T1 (AAL)',
    join(BUNDLED, 'colin27_ch2_t1.nii.gz'),
    join(BUNDLED, 'colin27_ch2_t1.nii.gz'),
    (z) => volumeSlice(labels, z),
    range(40, 141),
    [96, 112],
  );
}

/**
 * Multi-modal BraTS T1 → `target` ('t2f_flair' or 't2w'), or null when the data are absent.
 * `size` (default 96×96) and `split` (zs → { train, test, validation? }; default: test
 * z ≡ 5 mod 10, training ≥ 3 slices away) are those of the example protocols.
 */
export async function bratsDataset(target, { size = [96, 96], split = splitSlices } = {}) {
  const dir = bratsDir();
  if (!dir) return null;
  const seg = await loadVolume(join(dir, 'seg_auto_BraTS25_2.nii.gz'));
  const t1 = await loadVolume(join(dir, 't1n.nii.gz'));
  const labelsOf = (z) => {
    const s = volumeSlice(seg, z);
    const b = volumeSlice(t1, z);
    return s.map((v, i) => (v > 0 ? v : b[i] > 0 ? 4 : 0));
  };
  return makeDataset(
    `BraTS T1 → ${target === 't2w' ? 'T2' : 'FLAIR'}`,
    join(dir, 't1n.nii.gz'),
    join(dir, `${target}.nii.gz`),
    labelsOf,
    range(40, 121),
    size,
    split,
  );
}

/**
 * Mono-modal VoxelMorph test T1 → T1 with its FreeSurfer aseg labels (45 structures), slices
 * 60–169 of the third axis resized to `size` (default 96×112), or null when the read-only
 * data are absent. `split` as {@link bratsDataset}'s.
 */
export async function voxelmorphDataset({ size = [96, 112], split = splitSlices } = {}) {
  const dir = readOnlyDir('voxelmorph_test');
  if (!dir) return null;
  const labels = await loadVolume(join(dir, 'voxelmorph_test_seg_aseg.nii.gz'));
  const t1 = join(dir, 'voxelmorph_test_vol_t1.nii.gz');
  return makeDataset(
    'VoxelMorph T1 → T1 (aseg)',
    t1,
    t1,
    (z) => volumeSlice(labels, z),
    range(60, 170),
    size,
    split,
  );
}

/**
 * The non-monotone contrast remap of a fixed image: c ↦ 4·c·(1 − c) with c = clip(I, 0, 1).
 * On the VoxelMorph T1 (CSF ≈ 0.3, grey ≈ 0.6, white matter ≈ 0.9 of the scale) it makes grey
 * matter brightest, CSF next and white matter darker than both, so no monotone (or negated)
 * intensity map relates the two images: NCC's assumption breaks, MI's does not.
 * `image` any shape; returns a new tensor.
 */
export function parabolicRemap(image) {
  return tf.tidy(() => {
    const c = tf.clipByValue(image, 0, 1);
    return tf.mul(tf.mul(c, tf.sub(1, c)), 4);
  });
}

/**
 * Multi-modal-like VoxelMorph T1 → remapped T1 ({@link parabolicRemap} of the fixed slices)
 * with the aseg labels, or null when the read-only data are absent.
 */
export async function voxelmorphRemapDataset(options = {}) {
  const d = await voxelmorphDataset(options);
  if (!d) return null;
  for (const s of d.slices.values()) {
    const remapped = parabolicRemap(s.fixed);
    // moving and fixed share their tensors when both come from one volume
    if (s.fixed !== s.moving) s.fixed.dispose();
    s.fixed = remapped;
  }
  return { ...d, name: 'VoxelMorph T1 → remapped T1 (aseg)' };
}

/** The bundled ITK/BrainWeb T1 → proton-density slice pair (aligned, no labels), `size` (default 96×112). */
export async function itkPairDataset(size = [96, 112]) {
  return makeDataset(
    'ITK BrainWeb T1 → PD',
    join(BUNDLED, 'itk_brainweb_t1_slice.nii.gz'),
    join(BUNDLED, 'itk_brainweb_pd_slice.nii.gz'),
    null,
    [0],
    size,
  );
}

function range(a, b) {
  return Array.from({ length: b - a }, (_, i) => a + i);
}

/**
 * The pair (slice z, seed): moving and fixed deformed independently, with their labels
 * (null without labels) and the moving image in the fixed frame. Tensors the caller disposes.
 */
export function makePair(dataset, z, seed, { maxDisplacement = 4, controlSpacing = 16 } = {}) {
  const s = dataset.slices.get(z);
  const field = (k) =>
    randomSmoothField(dataset.size, { maxDisplacement, controlSpacing, seed: 2 * seed + k });
  return tf.tidy(() => {
    const um = field(1);
    const uf = field(2);
    return {
      moving: warp(s.moving, um),
      fixed: warp(s.fixed, uf),
      movingTruth: warp(s.moving, uf),
      movingLabels: s.labels ? warp(s.labels, um, { interpolation: 'nearest' }) : null,
      fixedLabels: s.labels ? warp(s.labels, uf, { interpolation: 'nearest' }) : null,
    };
  });
}

/** Disposes every tensor of a pair. */
export function disposePair(pair) {
  tf.dispose(Object.values(pair).filter(Boolean));
}

/**
 * The training pair of step i (deterministic, for exact resumption): a training slice and a
 * fresh deformation seed; returns `{ moving, fixed }` only.
 */
export function trainingPair(dataset, i, options) {
  const z = dataset.train[(i * 7919) % dataset.train.length];
  const p = makePair(dataset, z, i, options);
  const { moving, fixed } = p;
  tf.dispose([p.movingTruth, p.movingLabels, p.fixedLabels].filter(Boolean));
  return { moving, fixed };
}
