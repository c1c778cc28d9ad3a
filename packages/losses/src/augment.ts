import { assertImage, fail, mulberry32, tf } from '@regkit/core';

/** Options of {@link bezierIntensityAugment}. */
export interface BezierAugmentOptions {
  /**
   * n, the degree of the Bézier curve (default 3, the paper's and Models Genesis'): n + 1
   * control points, the end points fixed at (0, 0) and (1, 1), the n − 1 inner ones drawn
   * uniformly in [0, 1]².
   */
  controlPoints?: number;
  /** δ, the probability of inverting the intensities first, B(1 − I) (default 0.5). */
  invertProbability?: number;
  /** Seed of the control points and of the inversion draw (default 0). */
  seed?: number;
  /** Samples of the curve (default 1024); the remap interpolates linearly between them. */
  curveSamples?: number;
}

/** Bernstein-form point of the curve through `points` at t (de Casteljau, exact). */
function bezierPoint(points: number[][], t: number): [number, number] {
  const p = points.map((q) => [...q]);
  for (let r = p.length - 1; r > 0; r--) {
    for (let i = 0; i < r; i++) {
      p[i]![0] = (1 - t) * p[i]![0]! + t * p[i + 1]![0]!;
      p[i]![1] = (1 - t) * p[i]![1]! + t * p[i + 1]![1]!;
    }
  }
  return [p[0]![0]!, p[0]![1]!];
}

/**
 * The monotone intensity curve of {@link bezierIntensityAugment} for `seed`: the control
 * points, whether the image is inverted, and the remap sampled on a uniform grid of
 * [0, 1] (`table[k]` = B(k / (K − 1))). Models Genesis' construction: the x and y values of
 * the curve, sampled at K values of t, are each sorted (so the map is non-decreasing, with
 * B(0) = 0 and B(1) = 1), then interpolated linearly.
 */
export function bezierIntensityCurve(options: BezierAugmentOptions = {}): {
  points: number[][];
  inverted: boolean;
  table: Float32Array;
} {
  const fn = 'bezierIntensityAugment';
  const n = options.controlPoints ?? 3;
  const delta = options.invertProbability ?? 0.5;
  const samples = options.curveSamples ?? 1024;
  if (!Number.isInteger(n) || n < 1) fail(fn, `'controlPoints' must be an integer ≥ 1, got ${n}`);
  if (!(delta >= 0 && delta <= 1)) {
    fail(fn, `'invertProbability' must be in [0, 1], got ${delta}`);
  }
  if (!Number.isInteger(samples) || samples < 2) {
    fail(fn, `'curveSamples' must be an integer ≥ 2, got ${samples}`);
  }
  const rand = mulberry32(options.seed ?? 0);
  const points: number[][] = [[0, 0]];
  for (let i = 1; i < n; i++) points.push([rand(), rand()]);
  points.push([1, 1]);
  const inverted = rand() < delta;
  const xs = new Float64Array(samples);
  const ys = new Float64Array(samples);
  for (let k = 0; k < samples; k++) {
    const [x, y] = bezierPoint(points, k / (samples - 1));
    xs[k] = x;
    ys[k] = y;
  }
  xs.sort();
  ys.sort();
  const table = new Float32Array(samples);
  let j = 0;
  for (let k = 0; k < samples; k++) {
    const u = k / (samples - 1);
    while (j < samples - 2 && xs[j + 1]! < u) j++;
    const span = xs[j + 1]! - xs[j]!;
    const w = span > 0 ? Math.min(Math.max((u - xs[j]!) / span, 0), 1) : 0;
    table[k] = ys[j]! + w * (ys[j + 1]! - ys[j]!);
  }
  table[0] = 0;
  table[samples - 1] = 1;
  return { points, inverted, table };
}

/**
 * Stochastic non-linear intensity transformation (MASR-Net, Eq. 2–3; Models Genesis):
 * I′(x) = B(I(x)), or B(1 − I(x)) with probability δ, where B is a random monotone Bézier
 * curve of degree n with B(0) = 0 and B(1) = 1 ({@link bezierIntensityCurve}). Monotone, so
 * the structures of the image are kept while their contrast changes. Intensities are
 * clamped to [0, 1] first (normalise the image before); NaN voxels stay NaN. Not differentiable (an
 * augmentation); seeded: the same seed gives the same curve and inversion.
 *
 * @param image `[B, ...S, C]`, intensities in [0, 1].
 * @returns `[B, ...S, C]` float32 in [0, 1].
 * @example
 * ```ts
 * const view = bezierIntensityAugment(image, { controlPoints: 3, invertProbability: 0.5, seed: 7 });
 * ```
 */
export function bezierIntensityAugment(
  image: tf.Tensor,
  options: BezierAugmentOptions = {},
): tf.Tensor {
  assertImage('bezierIntensityAugment', 'image', image);
  const { inverted, table } = bezierIntensityCurve(options);
  const k = table.length;
  return tf.tidy(() => {
    const input = image.dtype === 'float32' ? image : tf.cast(image, 'float32');
    const nan = tf.isNaN(tf.reshape(input, [-1]));
    let x = tf.clipByValue(input, 0, 1);
    if (inverted) x = tf.sub(1, x);
    const pos = tf.mul(x, k - 1);
    const lo = tf.minimum(tf.floor(pos), k - 2);
    const w = tf.sub(pos, lo);
    const flat = tf.reshape(lo, [-1]);
    const t = tf.tensor1d(table);
    const a = tf.gather(t, tf.cast(flat, 'int32'));
    const b = tf.gather(t, tf.cast(tf.add(flat, 1), 'int32'));
    const y = tf.add(a, tf.mul(tf.reshape(w, [-1]), tf.sub(b, a)));
    // NaN stays NaN (the clamp and the table lookup would hide it): bad data shows up
    return tf.reshape(tf.where(nan, tf.fill(nan.shape, Number.NaN), y), image.shape);
  });
}
