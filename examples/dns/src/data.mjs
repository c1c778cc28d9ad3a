/**
 * Training slices of the bundled MASR-Net: 2D axial slices of every shared volume, each used
 * alone (self-supervised: no labels, no pairs), intensities scaled to [0, 1].
 *
 * - BraTS T1, T1c, T2, FLAIR (../shared/data/read-only/brats_case, read-only): slices 40–120
 *   at least 3 slices away from the example's test slices (z ≡ 5 mod 10), 96×96;
 * - Colin27 T1 (bundled with @regkit/cli): slices 40–140, 96×112;
 * - the VoxelMorph test T1 (read-only): slices 60–169 of its third axis, 96×112;
 * - the head CT (read-only): slices 20–100, window [−20, 120] HU, 96×96.
 * The ITK/BrainWeb T1 and PD slices are never trained on: they are the held-out test pair of
 * the networks package. Read-only folders that are absent are skipped with a message.
 */
import { join } from 'node:path';
import { resizeImage, tf } from '@regkit/core';
import {
  BUNDLED,
  bratsDir,
  loadVolume as load,
  readOnlyDir,
  scaleOf,
  volumeSlice as slice,
} from '@regkit/example-common/slices';

/** Slices `zs` of a volume, resized to `size`, mapped by `(v) => v'` then clipped to [0, 1]. */
function slices(vol, zs, size, map) {
  const [X, Y] = vol.shape;
  return zs.map((z) =>
    tf.tidy(() =>
      tf.clipByValue(map(resizeImage(tf.tensor(slice(vol, z), [1, X, Y, 1]), size)), 0, 1),
    ),
  );
}

const range = (a, b) => Array.from({ length: b - a }, (_, i) => a + i);
/** Distance of slice z to the nearest test slice (z ≡ 5 mod 10). */
const toTest = (z) => {
  const d = (((z - 5) % 10) + 10) % 10;
  return Math.min(d, 10 - d);
};

/**
 * The training images `{ source, image }` (`image` `[1, H, W, 1]` in [0, 1]); the caller
 * disposes them.
 */
export async function trainingImages({ log = console.log } = {}) {
  const out = [];
  const add = (source, images) => {
    for (const image of images) out.push({ source, image });
    log(`  ${source}: ${images.length} slices`);
  };
  const brats = bratsDir();
  if (brats) {
    const zs = range(40, 121).filter((z) => toTest(z) >= 3);
    for (const m of ['t1n', 't1c', 't2w', 't2f_flair']) {
      const vol = await load(join(brats, `${m}.nii.gz`));
      const s = scaleOf(vol.data);
      add(
        `BraTS ${m}`,
        slices(vol, zs, [96, 96], (t) => tf.div(t, s)),
      );
    }
  } else log('  BraTS (read-only) absent: skipped');
  const colin = await load(join(BUNDLED, 'colin27_ch2_t1.nii.gz'));
  const sc = scaleOf(colin.data);
  add(
    'Colin27 T1',
    slices(colin, range(40, 141), [96, 112], (t) => tf.div(t, sc)),
  );
  const vxm = readOnlyDir('voxelmorph_test');
  if (vxm) {
    const vol = await load(join(vxm, 'voxelmorph_test_vol_t1.nii.gz'));
    const s = scaleOf(vol.data);
    add(
      'VoxelMorph T1',
      slices(vol, range(60, 170), [96, 112], (t) => tf.div(t, s)),
    );
  } else log('  VoxelMorph T1 (read-only) absent: skipped');
  const ct = readOnlyDir('ct_head');
  if (ct) {
    const vol = await load(join(ct, 'invesalius_promed_ct0051.nii.gz'));
    add(
      'head CT',
      slices(vol, range(20, 100), [96, 96], (t) => tf.div(tf.add(t, 20), 140)),
    );
  } else log('  head CT (read-only) absent: skipped');
  return out;
}
