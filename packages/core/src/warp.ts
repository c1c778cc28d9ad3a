import { mayNeedGradient } from './grad_targets.js';
import {
  RegkitWarp,
  type RegkitWarpAttrs,
  RegkitWarpFieldGrad,
  RegkitWarpGrad,
  RegkitWarpImageGrad,
} from './kernel_names.js';
import { tf } from './tf.js';
import { assertField, assertImage, fail, fmtShape, lookUpOption } from './validate.js';
import { warpComposite } from './warp_composite.js';

/** Interpolation of `warp`: `'linear'` (bi/trilinear) or `'nearest'` (label maps). */
export type Interpolation = 'linear' | 'nearest';
/** Out-of-range handling: `'zeros'` (each outside corner contributes 0) or `'border'` (clamped coordinates). */
export type Padding = 'zeros' | 'border';

/** Options of {@link warp}. */
export interface WarpOptions {
  /** `'linear'` (default; bi/trilinear) or `'nearest'` (label maps: values are copied, never blended). */
  interpolation?: Interpolation;
  /** `'zeros'` (default): each out-of-range corner contributes 0, as torch `grid_sample(padding_mode='zeros')`; `'border'`: coordinates clamped to the image. */
  padding?: Padding;
}

/**
 * tfjs flag: `tf.env().set('REGKIT_PORTABLE_OPS', true)` makes regkit ops run their portable
 * composites of stock tfjs ops even where a kernel is registered (for comparison and debugging).
 */
export const PORTABLE_OPS_FLAG = 'REGKIT_PORTABLE_OPS';
const flags = tf.env() as unknown as { flagRegistry: Record<string, unknown> };
if (!(PORTABLE_OPS_FLAG in flags.flagRegistry))
  tf.env().registerFlag(PORTABLE_OPS_FLAG, () => false);

/** True when the current backend has all of `kernelNames` and portable ops are not forced. */
export function hasKernels(...kernelNames: string[]): boolean {
  if (tf.env().getBool(PORTABLE_OPS_FLAG)) return false;
  const backend = tf.getBackend();
  return kernelNames.every((k) => tf.getKernel(k, backend) !== undefined);
}

/**
 * The gradient of `RegkitWarp`. Computing the image and the field gradients together shares
 * the interpolation weights and the reads (`RegkitWarpGrad`), but a network or an optimiser
 * warping a fixed image needs the field's alone, which needs no scatter
 * (`RegkitWarpFieldGrad`, about 40 % less work), and the image's alone needs no image reads
 * (`RegkitWarpImageGrad`). Both together when the image may depend on what is being
 * differentiated and the field too (or the image is the field, a squaring u ↦ u∘u); else
 * each closure computes its own (tfjs calls only the closures of the inputs on the path).
 */
tf.registerGradient({
  kernelName: RegkitWarp,
  inputsToSave: ['image', 'field'],
  gradFunc: (dy, saved, attrs) => {
    const [image, field] = saved as [tf.Tensor, tf.Tensor];
    const inputs = { dy: dy as tf.Tensor, image, field };
    const run = (name: string) =>
      tf.engine().runKernel(name, inputs, attrs as unknown as tf.NamedAttrMap);
    const single = hasKernels(RegkitWarpImageGrad, RegkitWarpFieldGrad);
    if (
      !single ||
      image.dataId === field.dataId ||
      (mayNeedGradient(image) && mayNeedGradient(field))
    ) {
      const [dImage, dField] = run(RegkitWarpGrad) as tf.Tensor[];
      return { image: () => dImage!, field: () => dField! };
    }
    return {
      image: () => run(RegkitWarpImageGrad) as tf.Tensor,
      field: () => run(RegkitWarpFieldGrad) as tf.Tensor,
    };
  },
});

/**
 * Warps an image with a displacement field: `warp(m, u)(x) = m(x + u(x))`.
 *
 * Voxel centres are at integer indices, so this equals torch
 * `grid_sample(m, x + u, align_corners=True)` after converting layouts.
 * Differentiable with respect to `image` and `field` (linear interpolation;
 * nearest has a zero field gradient). Runs the `RegkitWarp` kernel of the current
 * backend when one is registered (JavaScript on cpu/wasm, WebAssembly-SIMD with
 * `@regkit/kernels`), else a portable composite of stock tfjs ops.
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
  return tf.tidy(() => {
    const img = image.dtype === 'float32' ? image : tf.cast(image, 'float32');
    const u = field.dtype === 'float32' ? field : tf.cast(field, 'float32');
    if (hasKernels(RegkitWarp, RegkitWarpGrad)) {
      const attrs: RegkitWarpAttrs = { interpolation, padding };
      return tf
        .engine()
        .runKernel(
          RegkitWarp,
          { image: img, field: u },
          attrs as unknown as tf.NamedAttrMap,
        ) as tf.Tensor;
    }
    return warpComposite(img, u, interpolation, padding);
  });
}
