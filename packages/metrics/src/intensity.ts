import { assertImage, fail, fmtShape, tf } from '@regkit/core';

function assertPair(fn: string, a: tf.Tensor, b: tf.Tensor): number {
  const nd = assertImage(fn, 'a', a);
  assertImage(fn, 'b', b);
  if (!tf.util.arraysEqual(a.shape, b.shape)) {
    fail(fn, `'a' ${fmtShape(a.shape)} and 'b' ${fmtShape(b.shape)} must have the same shape`);
  }
  return nd;
}

/**
 * Global normalised cross-correlation, Σa′b′ / sqrt(Σa′² Σb′² + 1e−5) with a′ = a − mean(a)
 * over the voxels of each batch item and channel, averaged (1 = perfect linear match).
 */
export async function ncc(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const nd = assertPair('ncc', a, b);
  const axes = Array.from({ length: nd }, (_, k) => k + 1);
  const value = tf.tidy(() => {
    const ac = tf.sub(a, tf.mean(a, axes, true));
    const bc = tf.sub(b, tf.mean(b, axes, true));
    const num = tf.sum(tf.mul(ac, bc), axes);
    const den = tf.sqrt(
      tf.add(tf.mul(tf.sum(tf.square(ac), axes), tf.sum(tf.square(bc), axes)), 1e-5),
    );
    return tf.mean(tf.div(num, den));
  });
  const out = (await value.data())[0]!;
  value.dispose();
  return out;
}

/**
 * Peak signal-to-noise ratio in dB, 10 log10(range² / mean((a − b)²)); `range` defaults to
 * max(b) − min(b) of the reference `b`. Infinity for identical images.
 */
export async function psnr(
  a: tf.Tensor,
  b: tf.Tensor,
  options: { range?: number } = {},
): Promise<number> {
  assertPair('psnr', a, b);
  const t = tf.tidy(() =>
    tf.stack([tf.mean(tf.squaredDifference(a, b)), tf.sub(tf.max(b), tf.min(b))]),
  );
  const [mse, span] = (await t.data()) as Float32Array;
  t.dispose();
  const range = options.range ?? span!;
  return 10 * Math.log10((range * range) / mse!);
}
