import { type AxisMatrix, mapAlongAxes } from './separable.js';
import { tf } from './tf.js';
import { assertImage, fail, perAxis } from './validate.js';

/** Normalised 1D Gaussian of standard deviation `sigma` truncated at radius floor(truncate·σ + 0.5) (scipy's rule; default truncate 4). */
export function gaussianKernel1d(sigma: number, truncate = 4): number[] {
  const radius = Math.floor(truncate * sigma + 0.5);
  const w = Array.from({ length: 2 * radius + 1 }, (_, i) =>
    Math.exp(-0.5 * ((i - radius) / sigma) ** 2),
  );
  const total = w.reduce((a, b) => a + b, 0);
  return w.map((v) => v / total);
}

/** Index of the voxel that scipy's 'reflect' mode reads at position `i` of an axis of size `n` (d c b a | a b c d | d c b a). */
export function reflectIndex(i: number, n: number): number {
  const period = 2 * n;
  const m = ((i % period) + period) % period;
  return m < n ? m : period - 1 - m;
}

/**
 * Reflect-pads `amount` voxels on both sides of `axis`: reversed edge slabs when they fit
 * (cheap on every backend), a gather for multiple reflections. Both keep the gradient right,
 * summing the reflected contributions (tfjs's MirrorPad gradient only slices, which is wrong).
 */
function reflectPad(x: tf.Tensor, axis: number, amount: number): tf.Tensor {
  const n = x.shape[axis]!;
  if (amount === 0) return x;
  if (amount > n) {
    const idx = Array.from({ length: n + 2 * amount }, (_, i) => reflectIndex(i - amount, n));
    return tf.gather(x, tf.tensor1d(idx, 'int32'), axis);
  }
  const slab = (start: number) => {
    const begin = x.shape.map((_, k) => (k === axis ? start : 0));
    const size = x.shape.map((s, k) => (k === axis ? amount : s));
    return tf.reverse(tf.slice(x, begin, size), axis);
  };
  return tf.concat([slab(0), x, slab(n - amount)], axis);
}

/** Largest axis that {@link gaussianSmooth} filters with a dense `[n, n]` matrix (reflection folded in) instead of a padded convolution. */
const DENSE_MAX_AXIS = 96;

/** `[n, n]` matrix of a symmetric 1D filter `w` with scipy's 'reflect' borders folded in. */
export function reflectFilterMatrix(w: readonly number[], n: number): AxisMatrix {
  const r = (w.length - 1) / 2;
  const values = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let t = 0; t < w.length; t++) values[i * n + reflectIndex(i + t - r, n)]! += w[t]!;
  }
  return { values, rows: n };
}

/**
 * Separable Gaussian smoothing of every channel, with reflecting borders
 * (equal to `scipy.ndimage.gaussian_filter(mode='reflect', truncate=4.0)` per channel).
 * Differentiable. Self-adjoint: with half-sample reflection the per-axis matrix of a symmetric
 * kernel is symmetric, so the gradient of ⟨gaussianSmooth(x, σ), dy⟩ with respect to x is
 * gaussianSmooth(dy, σ) (a vector–Jacobian product needs no forward pass).
 *
 * @param x `[B, ...S, C]` image or field.
 * @param sigma standard deviation in voxels: one value or one per spatial axis (0 skips an axis).
 * @param options `truncate`: kernel radius in standard deviations (default 4, scipy's; skimage's SSIM uses 3.5).
 * @returns `[B, ...S, C]`.
 */
export function gaussianSmooth(
  x: tf.Tensor,
  sigma: number | readonly number[],
  options: { truncate?: number } = {},
): tf.Tensor {
  const fn = 'gaussianSmooth';
  const nd = assertImage(fn, 'x', x);
  const sig = perAxis(fn, 'sigma', sigma, nd);
  if (sig.some((s) => s < 0)) fail(fn, `'sigma' must be ≥ 0, got ${JSON.stringify(sigma)}`);
  const truncate = options.truncate ?? 4;
  if (!(truncate > 0)) fail(fn, `'truncate' must be > 0, got ${truncate}`);
  const spatialIn = x.shape.slice(1, 1 + nd);
  if (spatialIn.every((n, k) => sig[k] === 0 || n <= DENSE_MAX_AXIS)) {
    // short axes (velocity fields on coarse grids): one small matrix product per axis
    return tf.tidy(() =>
      mapAlongAxes(
        x.dtype === 'float32' ? x : tf.cast(x, 'float32'),
        spatialIn.map((n, k) =>
          sig[k] === 0 ? null : reflectFilterMatrix(gaussianKernel1d(sig[k]!, truncate), n),
        ),
      ),
    );
  }
  return tf.tidy(() => {
    const [b, ...rest] = x.shape;
    const spatial = rest.slice(0, nd);
    const c = rest[nd]!;
    const perm = [0, nd + 1, ...Array.from({ length: nd }, (_, k) => k + 1)];
    // channels into the batch axis: [B * C, ...S, 1]
    const xf = x.dtype === 'float32' ? x : tf.cast(x, 'float32');
    const taping = tf.engine().isTapeOn();
    // one channel: the transposes only move a unit axis, a reshape does it without a copy
    let y =
      c === 1
        ? tf.reshape(xf, [b!, ...spatial, 1])
        : tf.reshape(tf.transpose(xf, perm), [b! * c, ...spatial, 1]);
    for (let k = 0; k < nd; k++) {
      if (sig[k] === 0) continue;
      const w = gaussianKernel1d(sig[k]!, truncate);
      const r = (w.length - 1) / 2;
      const kshape = spatial.map((_, j) => (j === k ? w.length : 1));
      const kernel = tf.tensor(w, [...kshape, 1, 1]);
      const padded = reflectPad(y, k + 1, r);
      const next =
        nd === 2
          ? tf.conv2d(padded as tf.Tensor4D, kernel as tf.Tensor4D, 1, 'valid')
          : tf.conv3d(padded as tf.Tensor5D, kernel as tf.Tensor5D, 1, 'valid');
      // free each pass's input and padded copy at once (the tidy would keep them all to its
      // end: eight full-size copies of a large volume instead of three); never x itself, and
      // not while a gradient tape records (the backward pass needs them)
      if (!taping) {
        if (padded !== y && padded !== x) padded.dispose();
        if (y !== x && y !== xf) y.dispose();
      }
      y = next;
    }
    if (c === 1) return tf.reshape(y, x.shape);
    const back = [0, ...Array.from({ length: nd }, (_, k) => k + 2), 1];
    return tf.transpose(tf.reshape(y, [b!, c, ...spatial]), back);
  });
}
