import { arange, type Interpolation, type Padding, sampleImage } from './sample.js';
import { tf } from './tf.js';
import { assertField, assertImage, fail, fmtShape, lookUpOption } from './validate.js';

export type { Interpolation, Padding } from './sample.js';

/** Options of {@link warp}. */
export interface WarpOptions {
  /** `'linear'` (default; bi/trilinear) or `'nearest'` (label maps: values are copied, never blended). */
  interpolation?: Interpolation;
  /** `'zeros'` (default): each out-of-range corner contributes 0, as torch `grid_sample(padding_mode='zeros')`; `'border'`: coordinates clamped to the image. */
  padding?: Padding;
}

/**
 * Warps an image with a displacement field: `warp(m, u)(x) = m(x + u(x))`.
 *
 * Voxel centres are at integer indices, so this equals torch
 * `grid_sample(m, x + u, align_corners=True)` after converting layouts.
 * Differentiable with respect to `image` and `field` (linear interpolation;
 * nearest has a zero field gradient).
 *
 * @param image `[B, ...S, C]` with S = `[H, W]` or `[D, H, W]`; non-float images are cast to float32.
 * @param field `[B, ...So, ndim]` displacement in voxels, component k along spatial axis k. The
 *   output has the field's spatial shape `So` (usually `So = S`); positions are voxel coordinates of `image`.
 * @returns `[B, ...So, C]` float32.
 * @example
 * ```ts
 * const moved = warp(moving, field);                                      // images
 * const labels = warp(movingLabels, field, { interpolation: 'nearest' }); // label maps
 * ```
 */
export function warp(image: tf.Tensor, field: tf.Tensor, options: WarpOptions = {}): tf.Tensor {
  const fn = 'warp';
  const nd = assertImage(fn, 'image', image);
  const fnd = assertField(fn, 'field', field);
  if (nd !== fnd) {
    fail(
      fn,
      `'image' ${fmtShape(image.shape)} is ${nd}D but 'field' ${fmtShape(field.shape)} is ${fnd}D`,
    );
  }
  if (image.shape[0] !== field.shape[0]) {
    fail(
      fn,
      `batch sizes differ: 'image' ${fmtShape(image.shape)}, 'field' ${fmtShape(field.shape)}`,
    );
  }
  const interpolation = lookUpOption(fn, 'interpolation', options.interpolation ?? 'linear', [
    'linear',
    'nearest',
  ] as const);
  const padding = lookUpOption(fn, 'padding', options.padding ?? 'zeros', [
    'zeros',
    'border',
  ] as const);
  const outSpatial = field.shape.slice(1, 1 + nd);
  return tf.tidy(() => {
    const img = image.dtype === 'float32' ? image : tf.cast(image, 'float32');
    const u = field.dtype === 'float32' ? field : tf.cast(field, 'float32');
    return sampleImage(img, u, outSpatial, outSpatial.map(arange), interpolation, padding);
  });
}
