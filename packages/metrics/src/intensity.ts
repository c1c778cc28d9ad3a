import { assertImagePair, fail, fmtShape, gaussianSmooth, tf } from '@regkit/core';

/**
 * Global normalised cross-correlation, Σa′b′ / sqrt(Σa′² Σb′² + 1e−5) with a′ = a − mean(a)
 * over the voxels of each batch item and channel, averaged (1 = perfect linear match).
 */
export async function ncc(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const nd = assertImagePair('ncc', a, b);
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

/** Options of {@link psnr} and {@link ssim}. */
export interface IntensityRangeOptions {
  /**
   * The intensity range L of the images: its span `high − low`, or `[low, high]`
   * (default: max(b) − min(b) of the reference `b`).
   */
  intensityRange?: number | readonly [number, number];
}

/** The span L of an {@link IntensityRangeOptions.intensityRange}. */
function rangeSpan(fn: string, r: number | readonly [number, number]): number {
  const span = typeof r === 'number' ? r : Array.isArray(r) && r.length === 2 ? r[1] - r[0] : NaN;
  if (!(span > 0 && Number.isFinite(span))) {
    fail(
      fn,
      `'intensityRange' must be a span > 0 or [low, high] with high > low, got ${JSON.stringify(r)}`,
    );
  }
  return span;
}

/**
 * Peak signal-to-noise ratio in dB, 10 log10(L² / mean((a − b)²)) with L the intensity
 * range (default max(b) − min(b) of the reference `b`). Infinity for identical images.
 */
export async function psnr(
  a: tf.Tensor,
  b: tf.Tensor,
  options: IntensityRangeOptions = {},
): Promise<number> {
  assertImagePair('psnr', a, b);
  const t = tf.tidy(() =>
    tf.stack([tf.mean(tf.squaredDifference(a, b)), tf.sub(tf.max(b), tf.min(b))]),
  );
  const [mse, span] = (await t.data()) as Float32Array;
  t.dispose();
  const range =
    options.intensityRange === undefined ? span! : rangeSpan('psnr', options.intensityRange);
  return 10 * Math.log10((range * range) / mse!);
}

/** Options of {@link ssim}: the intensity range L of the constants (K1 L)², (K2 L)². */
export type SsimOptions = IntensityRangeOptions;

/**
 * Structural similarity map, scikit-image's `structural_similarity(gaussian_weights=True,
 * sigma=1.5, use_sample_covariance=False, K1=0.01, K2=0.03)`: local statistics by an
 * 11-tap Gaussian (σ 1.5, truncate 3.5, reflecting borders) per channel.
 *
 * @returns `[B, ...S, C]` SSIM map (a tensor the caller disposes).
 */
export function ssimMap(a: tf.Tensor, b: tf.Tensor, intensityRange: number): tf.Tensor {
  assertImagePair('ssimMap', a, b);
  return tf.tidy(() => {
    const g = (x: tf.Tensor) => gaussianSmooth(x, 1.5, { truncate: 3.5 });
    const ma = g(a);
    const mb = g(b);
    const va = tf.sub(g(tf.square(a)), tf.square(ma));
    const vb = tf.sub(g(tf.square(b)), tf.square(mb));
    const vab = tf.sub(g(tf.mul(a, b)), tf.mul(ma, mb));
    const c1 = (0.01 * intensityRange) ** 2;
    const c2 = (0.03 * intensityRange) ** 2;
    const num = tf.mul(tf.add(tf.mul(tf.mul(ma, mb), 2), c1), tf.add(tf.mul(vab, 2), c2));
    const den = tf.mul(
      tf.add(tf.add(tf.square(ma), tf.square(mb)), c1),
      tf.add(tf.add(va, vb), c2),
    );
    return tf.div(num, den);
  });
}

/**
 * Mean SSIM (scikit-image convention): the {@link ssimMap} averaged over the voxels at least
 * 5 voxels (half the window) from every border, then over channels and batch.
 */
export async function ssim(a: tf.Tensor, b: tf.Tensor, options: SsimOptions = {}): Promise<number> {
  const nd = assertImagePair('ssim', a, b);
  if (a.shape.slice(1, 1 + nd).some((s) => s < 11)) {
    fail('ssim', `every spatial size must be at least 11 (the window), got ${fmtShape(a.shape)}`);
  }
  let range =
    options.intensityRange === undefined ? undefined : rangeSpan('ssim', options.intensityRange);
  if (range === undefined) {
    const span = tf.tidy(() => tf.sub(tf.max(b), tf.min(b)));
    range = (await span.data())[0]!;
    span.dispose();
  }
  const dataRange = range;
  const mean = tf.tidy(() => {
    const map = ssimMap(a, b, dataRange);
    const begin = map.shape.map((_, i) => (i >= 1 && i <= nd ? 5 : 0));
    const size = map.shape.map((s, i) => (i >= 1 && i <= nd ? s - 10 : s));
    return tf.mean(tf.slice(map, begin, size));
  });
  const out = (await mean.data())[0]!;
  mean.dispose();
  return out;
}
