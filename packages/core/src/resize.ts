import { scaledGrid } from './grid.js';
import { registerGradientKernel } from './kernel_gradient.js';
import {
  RegkitResizeLinear,
  type RegkitResizeLinearAttrs,
  RegkitResizeLinearGrad,
} from './kernel_names.js';
import { type AxisMatrix, mapAlongAxes } from './separable.js';
import { gaussianKernel1d, gaussianSmooth, reflectFilterMatrix } from './smooth.js';
import { tf } from './tf.js';
import { assertField, assertImage, assertSpatialShape, fail, fmtShape } from './validate.js';
import { vjp } from './vjp.js';
import { hasKernels, warp } from './warp.js';

/** Aligned-corner sampling ratio (S − 1)/(S' − 1) per axis (0 where either size is 1). */
function cornerRatios(from: readonly number[], to: readonly number[]): number[] {
  return to.map((s, k) => (s > 1 && from[k]! > 1 ? (from[k]! - 1) / (s - 1) : 0));
}

registerGradientKernel(RegkitResizeLinear, RegkitResizeLinearGrad);

/** Portable `resizeLinear`: a border-padded warp onto the scaled grid. */
function resizeLinearComposite(x: tf.Tensor, to: readonly number[]): tf.Tensor {
  const ratio = cornerRatios(x.shape.slice(1, -1), to);
  // sampling positions i (S − 1)/(S' − 1) written as the displacement i ((S − 1)/(S' − 1) − 1)
  const grid = scaledGrid(
    to,
    ratio.map((r) => r - 1),
  );
  const positions = x.shape[0] === 1 ? grid : tf.tile(grid, [x.shape[0]!, ...to.map(() => 1), 1]);
  return warp(x, positions, { padding: 'border' });
}

/**
 * Resamples `x` to a new grid over the same extent by linear interpolation with aligned
 * corners (torch `interpolate(..., mode='bilinear'/'trilinear', align_corners=True)`): output
 * voxel i samples the input at i (S − 1)/(S' − 1) along each axis. No smoothing, so use
 * {@link resizeImage} to shrink images. Differentiable with respect to `x`. Runs the separable
 * `RegkitResizeLinear` kernel on cpu and wasm, a border-padded warp elsewhere.
 *
 * @param x `[B, ...S, C]`; non-float tensors are cast to float32.
 * @param spatialShape the new spatial shape S'.
 * @returns `[B, ...S', C]` float32.
 * @example
 * ```ts
 * const up = resizeLinear(features, [64, 64, 64]);
 * ```
 */
export function resizeLinear(x: tf.Tensor, spatialShape: readonly number[]): tf.Tensor {
  const fn = 'resizeLinear';
  const nd = assertImage(fn, 'x', x);
  const snd = assertSpatialShape(fn, 'spatialShape', spatialShape);
  if (nd !== snd) {
    fail(fn, `${fmtShape(x.shape)} cannot be resized to ${JSON.stringify(spatialShape)}`);
  }
  return tf.tidy(() => {
    const xf = x.dtype === 'float32' ? x : tf.cast(x, 'float32');
    if (hasKernels(RegkitResizeLinear, RegkitResizeLinearGrad)) {
      const attrs: RegkitResizeLinearAttrs = { shape: [...spatialShape] };
      return tf
        .engine()
        .runKernel(RegkitResizeLinear, { x: xf }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
    }
    return resizeLinearComposite(xf, spatialShape);
  });
}

/**
 * Resamples an image to a new grid over the same extent, corners aligned as in
 * {@link resizeField} (output voxel i samples the input at i (S − 1)/(S' − 1), linear
 * interpolation). When an axis shrinks by a factor f > 1 the image is first smoothed with a
 * Gaussian of σ = f/2 voxels along it (anti-aliasing). Differentiable with respect to `image`.
 *
 * @param image `[B, ...S, C]`.
 * @param spatialShape the new spatial shape S'.
 * @returns `[B, ...S', C]`.
 */
export function resizeImage(image: tf.Tensor, spatialShape: readonly number[]): tf.Tensor {
  const fn = 'resizeImage';
  const nd = assertImage(fn, 'image', image);
  const snd = assertSpatialShape(fn, 'spatialShape', spatialShape);
  if (nd !== snd) {
    fail(fn, `${fmtShape(image.shape)} cannot be resized to ${JSON.stringify(spatialShape)}`);
  }
  const from = image.shape.slice(1, -1);
  if (from.every((s, k) => s === spatialShape[k])) return tf.clone(image);
  const ratio = cornerRatios(from, spatialShape);
  const sigma = ratio.map((r) => (r > 1 ? 0.5 * r : 0));
  if (from.every((n) => n <= DENSE_RESIZE_MAX_AXIS)) {
    // one product per axis with M = L·G (sampling after smoothing): no padded copies, and
    // every intermediate is at most the input's size
    return tf.tidy(() =>
      mapAlongAxes(
        image.dtype === 'float32' ? image : tf.cast(image, 'float32'),
        from.map((n, k) => resizeAxisMatrix(n, spatialShape[k]!, sigma[k]!)),
      ),
    );
  }
  return tf.tidy(() => {
    const smooth = sigma.some((v) => v > 0) ? gaussianSmooth(image, sigma) : image;
    return resizeLinear(smooth, spatialShape);
  });
}

/** Largest axis that {@link resizeImage} maps with one dense `[S', S]` matrix (else a padded convolution, then a resize). */
const DENSE_RESIZE_MAX_AXIS = 320;

/**
 * `[m, n]` matrix of one axis of {@link resizeImage}: a Gaussian of σ voxels with reflecting
 * borders (none when σ = 0), then linear sampling at i (n − 1)/(m − 1) (corners aligned),
 * composed in float64; `null` when the axis is unchanged.
 */
function resizeAxisMatrix(n: number, m: number, sigma: number): AxisMatrix | null {
  if (n === m && sigma === 0) return null;
  const g = sigma > 0 ? reflectFilterMatrix(gaussianKernel1d(sigma), n).values : null;
  const values = new Float32Array(m * n);
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    const pos = m > 1 && n > 1 ? (i * (n - 1)) / (m - 1) : 0;
    const i0 = Math.min(Math.floor(pos), n - 1);
    const i1 = Math.min(i0 + 1, n - 1);
    const t = pos - i0;
    row.fill(0);
    if (g) {
      for (let j = 0; j < n; j++) row[j] = (1 - t) * g[i0 * n + j]! + t * g[i1 * n + j]!;
    } else {
      row[i0]! += 1 - t;
      row[i1]! += t;
    }
    values.set(row, i * n);
  }
  return { values, rows: m };
}

/**
 * Resamples a displacement field to a new grid over the same physical extent
 * and rescales its vectors, so it describes the same deformation on the new grid.
 *
 * Grid corners are aligned (torch `interpolate(..., align_corners=True)`): output voxel
 * i_k samples the input at i_k (S_k − 1)/(S'_k − 1) (linear interpolation), and component k
 * is multiplied by (S'_k − 1)/(S_k − 1). Differentiable with respect to `field`.
 *
 * @param field `[B, ...S, ndim]` displacement (voxels of the input grid).
 * @param spatialShape the new spatial shape S'.
 * @returns `[B, ...S', ndim]` displacement in voxels of the new grid.
 */
export function resizeField(field: tf.Tensor, spatialShape: readonly number[]): tf.Tensor {
  const fn = 'resizeField';
  const nd = assertField(fn, 'field', field);
  const snd = assertSpatialShape(fn, 'spatialShape', spatialShape);
  if (nd !== snd)
    fail(fn, `'spatialShape' ${JSON.stringify(spatialShape)} must have ${nd} entries`);
  const inSpatial = field.shape.slice(1, 1 + nd);
  const out = [...spatialShape];
  const ratios = cornerRatios(inSpatial, out);
  const ratio = (k: number) => ratios[k]!;
  // resizing is linear in the field, so the vectors are rescaled on the (smaller) input first
  const vectorScale = out.map((_, k) => (ratio(k) > 0 ? 1 / ratio(k) : 1));
  return tf.tidy(() => resizeLinear(tf.mul(field, tf.tensor1d(vectorScale)), out));
}

/**
 * The vector–Jacobian product of {@link resizeField} at `field`: dyᵀ ∂resizeField(field, S')/∂field,
 * the gradient of ⟨resizeField(field, S'), dy⟩ with respect to the field. resizeField is
 * linear, so only the field's shape is used; with the `RegkitResizeLinearGrad` kernel
 * registered the forward is not run.
 *
 * @param field `[B, ...S, ndim]` the point (its values are not read when the kernel runs).
 * @param spatialShape S', as given to {@link resizeField}.
 * @param dy `[B, ...S', ndim]` cotangent.
 * @returns `[B, ...S, ndim]`.
 */
export function resizeFieldVjp(
  field: tf.Tensor,
  spatialShape: readonly number[],
  dy: tf.Tensor,
): tf.Tensor {
  const fn = 'resizeFieldVjp';
  const nd = assertField(fn, 'field', field);
  assertField(fn, 'dy', dy);
  const out = [...spatialShape];
  const expected = [field.shape[0]!, ...out, nd];
  if (out.length !== nd || !tf.util.arraysEqual(dy.shape, expected)) {
    fail(fn, `'dy' ${fmtShape(dy.shape)} must have the shape ${fmtShape(expected)}`);
  }
  if (
    !hasKernels(RegkitResizeLinear, RegkitResizeLinearGrad) ||
    tf.engine().state.gradientDepth > 0
  ) {
    return vjp((x) => resizeField(x, out), [field], dy)[0]!;
  }
  const ratios = cornerRatios(field.shape.slice(1, 1 + nd), out);
  const vectorScale = ratios.map((r) => (r > 0 ? 1 / r : 1));
  return tf.tidy(() => {
    const attrs: RegkitResizeLinearAttrs = { shape: out };
    const g = tf
      .engine()
      .runKernel(
        RegkitResizeLinearGrad,
        { dy: dy.dtype === 'float32' ? dy : tf.cast(dy, 'float32'), x: field },
        attrs as unknown as tf.NamedAttrMap,
      ) as tf.Tensor;
    return tf.mul(g, tf.tensor1d(vectorScale));
  });
}
