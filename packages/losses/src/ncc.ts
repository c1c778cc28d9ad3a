import { assertImagePair, boxSum, fail, perAxis, tf } from '@regkit/core';

/**
 * Global normalised cross-correlation loss: for each batch item and channel, with
 * a' = a − mean(a), b' = b − mean(b) over the voxels,
 *   ncc = Σ a'b' / sqrt(Σ a'² · Σ b'² + 1e−5),
 * and loss = −mean(ncc) over batch and channels (−1 for a perfect linear match).
 *
 * @param a `[B, ...S, C]`.
 * @param b same shape as `a`.
 * @returns scalar to minimise, in [−1, 1].
 */
export function globalNccLoss(a: tf.Tensor, b: tf.Tensor): tf.Scalar {
  const nd = assertImagePair('globalNccLoss', a, b);
  const axes = Array.from({ length: nd }, (_, k) => k + 1);
  return tf.tidy(() => {
    const ac = tf.sub(a, tf.mean(a, axes, true));
    const bc = tf.sub(b, tf.mean(b, axes, true));
    const num = tf.sum(tf.mul(ac, bc), axes);
    const den = tf.sqrt(
      tf.add(tf.mul(tf.sum(tf.square(ac), axes), tf.sum(tf.square(bc), axes)), 1e-5),
    );
    return tf.neg(tf.mean(tf.div(num, den))) as tf.Scalar;
  });
}

/** Options of {@link localNccLoss}. */
export interface LocalNccOptions {
  /** Odd window size in voxels, one value or one per spatial axis (default 9, as VoxelMorph). */
  window?: number | readonly number[];
}

/**
 * Local normalised cross-correlation loss, the VoxelMorph / SITReg definition, per channel:
 * with zero-padded 'same' box sums Σ over a window of n = Π w_k voxels,
 *   cross = Σab − ū Σa − ā Σb + ā ū n,  var_a = Σa² − 2ā Σa + ā² n  (ā = Σa/n, ū = Σb/n),
 *   cc = cross² / (var_a var_b + 1e−5),  loss = −mean(cc) over batch, voxels and channels.
 * Negative covariance is not clamped (cross is squared). The box sums use core's
 * `boxSum` (exact, O(1) per voxel for any window; a kernel on cpu/wasm).
 *
 * @param a `[B, ...S, C]`, e.g. the warped moving image.
 * @param b same shape as `a`, e.g. the fixed image.
 * @returns scalar to minimise, in [−1, 0].
 */
export function localNccLoss(a: tf.Tensor, b: tf.Tensor, options: LocalNccOptions = {}): tf.Scalar {
  const fn = 'localNccLoss';
  const nd = assertImagePair(fn, a, b);
  const window = perAxis(fn, 'window', options.window ?? 9, nd);
  if (window.some((w) => !Number.isInteger(w) || w < 1 || w % 2 === 0)) {
    fail(fn, `'window' must be odd positive integers, got ${JSON.stringify(options.window)}`);
  }
  const n = window.reduce((p, q) => p * q, 1);
  return tf.tidy(() => {
    const batch = a.shape[0]!;
    // one box-sum call for the five maps [a, b, a², b², ab], stacked along the batch axis
    // (contiguous; splitting along the channel axis is ~25x slower on wasm)
    const sums = boxSum(tf.concat([a, b, tf.square(a), tf.square(b), tf.mul(a, b)], 0), window);
    const [sa, sb, saa, sbb, sab] = tf.split(sums, [batch, batch, batch, batch, batch], 0) as [
      tf.Tensor,
      tf.Tensor,
      tf.Tensor,
      tf.Tensor,
      tf.Tensor,
    ];
    const ma = tf.div(sa, n);
    const mb = tf.div(sb, n);
    const cross = tf.add(
      tf.sub(tf.sub(sab, tf.mul(mb, sa)), tf.mul(ma, sb)),
      tf.mul(tf.mul(ma, mb), n),
    );
    const varA = tf.add(tf.sub(saa, tf.mul(tf.mul(ma, sa), 2)), tf.mul(tf.square(ma), n));
    const varB = tf.add(tf.sub(sbb, tf.mul(tf.mul(mb, sb), 2)), tf.mul(tf.square(mb), n));
    const cc = tf.div(tf.square(cross), tf.add(tf.mul(varA, varB), 1e-5));
    return tf.neg(tf.mean(cc)) as tf.Scalar;
  });
}
