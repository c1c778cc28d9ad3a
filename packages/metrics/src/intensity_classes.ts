import { tf } from '@regkit/core';

/**
 * Automatic tissue classes of an image with no label map (the demos' 2D pair), for Dice:
 * 1D k-means (Lloyd) on the intensities, `classes` centres started evenly over [min, max]
 * at lo + (k + ½)(hi − lo)/classes, at most 50 rounds (until no centre moves by more than
 * 1e-6 (hi − lo)); each voxel gets the rank of its nearest centre, so 0 is the darkest class
 * (the background of a brain image). Deterministic.
 *
 * @param image `[1, ...S, 1]` (any shape: voxels are classified one by one).
 * @param classes number of centres (default 4).
 * @returns float32 labels 0 … classes − 1, the shape of `image` (a class no voxel joined keeps its rank).
 */
export async function intensityClasses(image: tf.Tensor, classes = 4): Promise<tf.Tensor> {
  if (!(image instanceof tf.Tensor)) {
    throw new Error(`intensityClasses(): 'image' must be a tf.Tensor, got ${typeof image}`);
  }
  if (!Number.isInteger(classes) || classes < 2) {
    throw new Error(`intensityClasses(): 'classes' must be an integer ≥ 2, got ${classes}`);
  }
  const v = (await image.data()) as Float32Array;
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (const x of v) {
    if (x < lo) lo = x;
    if (x > hi) hi = x;
  }
  const c = Array.from({ length: classes }, (_, k) => lo + ((k + 0.5) * (hi - lo)) / classes);
  const assign = new Int32Array(v.length);
  for (let it = 0; it < 50; it++) {
    const sum = new Float64Array(classes);
    const cnt = new Float64Array(classes);
    for (let i = 0; i < v.length; i++) {
      let best = 0;
      for (let k = 1; k < classes; k++)
        if (Math.abs(v[i]! - c[k]!) < Math.abs(v[i]! - c[best]!)) best = k;
      assign[i] = best;
      sum[best] = sum[best]! + v[i]!;
      cnt[best] = cnt[best]! + 1;
    }
    let moved = 0;
    for (let k = 0; k < classes; k++) {
      if (cnt[k]! > 0) {
        const n = sum[k]! / cnt[k]!;
        moved = Math.max(moved, Math.abs(n - c[k]!));
        c[k] = n;
      }
    }
    if (moved < 1e-6 * (hi - lo)) break;
  }
  const order = c.map((x, k) => [x, k] as const).sort((a, b) => a[0] - b[0]);
  const rank = new Int32Array(classes);
  order.forEach(([, k], r) => {
    rank[k] = r;
  });
  const out = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = rank[assign[i]!]!;
  return tf.tensor(out, image.shape, 'float32');
}
