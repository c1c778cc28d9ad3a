/**
 * Names, inputs and attributes of the kernels regkit defines. A backend-specific
 * implementation registered under one of these names (`tf.registerKernel`) is used
 * by the op of the same contract; without one, the op runs its portable composite.
 * `@regkit/kernels` registers WebAssembly-SIMD versions for cpu and wasm; core
 * itself registers plain-JavaScript versions for cpu and wasm.
 */
import type { tf } from './tf.js';

/** `warp`: output `[B, ...So, C]` = image sampled at x + field(x). */
export const RegkitWarp = 'RegkitWarp';
/** Gradient of `warp`: outputs `[dImage, dField]`. */
export const RegkitWarpGrad = 'RegkitWarpGrad';
/**
 * Gradient of `warp` with respect to the image alone: output `dImage` `[B, ...S, C]` (the
 * scatter of dy; inputs and attributes of {@link RegkitWarpGrad}, `image` read for its shape).
 */
export const RegkitWarpImageGrad = 'RegkitWarpImageGrad';
/**
 * Gradient of `warp` with respect to the field alone: output `dField` `[B, ...So, ndim]`
 * (inputs and attributes of {@link RegkitWarpGrad}). Each output voxel is independent, so
 * it needs no scatter: a network or an optimiser warping a fixed image needs only this.
 */
export const RegkitWarpFieldGrad = 'RegkitWarpFieldGrad';

/** Inputs of {@link RegkitWarp}: image `[B, ...S, C]` float32, field `[B, ...So, ndim]` float32. */
export type RegkitWarpInputs = { image: tf.TensorInfo; field: tf.TensorInfo };
/** Inputs of {@link RegkitWarpGrad} (and of the image and field gradients alone): `dy` `[B, ...So, C]` plus the forward inputs. */
export type RegkitWarpGradInputs = {
  dy: tf.TensorInfo;
  image: tf.TensorInfo;
  field: tf.TensorInfo;
};
/** Attributes of the warp kernels (forward and gradients). */
export interface RegkitWarpAttrs {
  interpolation: 'linear' | 'nearest';
  padding: 'zeros' | 'border';
}

/** `boxSum`: zero-padded 'same' box sum over the spatial axes, input `x` `[B, ...S, C]`. */
export const RegkitBoxSum = 'RegkitBoxSum';
/** Attributes of {@link RegkitBoxSum}: odd window size per spatial axis. */
export interface RegkitBoxSumAttrs {
  window: number[];
}

/** `upsampleNearest`: every voxel of `x` `[B, ...S, C]` repeated f times along each spatial axis. */
export const RegkitUpsampleNearest = 'RegkitUpsampleNearest';
/** Gradient of `upsampleNearest`: sums of `dy` `[B, ...fS, C]` over f×f(×f) blocks. */
export const RegkitUpsampleNearestGrad = 'RegkitUpsampleNearestGrad';
/** Attributes of both upsampling kernels: the integer factor. */
export interface RegkitUpsampleAttrs {
  factor: number;
}

/**
 * Gradient of tfjs's `LeakyRelu`, inputs `dy` and `x` (same shape, float32), attrs
 * {@link RegkitLeakyReluGradAttrs}: dx = x > 0 ? dy : alpha·dy, tfjs's
 * select(x > 0, dy, alpha·dy) in one pass. Core registers no kernel of its own: without one
 * (no `@regkit/kernels`, or another backend) the gradient runs tfjs's ops.
 */
export const RegkitLeakyReluGrad = 'RegkitLeakyReluGrad';
/** Attributes of {@link RegkitLeakyReluGrad}: the slope for x ≤ 0, as tfjs's `LeakyRelu`. */
export interface RegkitLeakyReluGradAttrs {
  alpha: number;
}

/** `maxPool` of whole windows: window = stride = `size` along every spatial axis of `x` `[B, ...S, C]`. */
export const RegkitMaxPool = 'RegkitMaxPool';
/** Gradient of {@link RegkitMaxPool}: `dy` goes to the first maximum of each window of `x`. */
export const RegkitMaxPoolGrad = 'RegkitMaxPoolGrad';
/** Attributes of both max-pooling kernels. */
export interface RegkitMaxPoolAttrs {
  size: number;
}

/**
 * `resizeLinear`: `x` `[B, ...S, C]` resampled to `[B, ...S', C]` by separable linear
 * interpolation with aligned corners (output i samples the input at i (S − 1)/(S' − 1)).
 */
export const RegkitResizeLinear = 'RegkitResizeLinear';
/** Gradient (adjoint) of {@link RegkitResizeLinear}: `dy` `[B, ...S', C]` back to `[B, ...S, C]`. */
export const RegkitResizeLinearGrad = 'RegkitResizeLinearGrad';
/** Attributes of both resizing kernels: the spatial shape of the output (`shape`). */
export interface RegkitResizeLinearAttrs {
  shape: number[];
}

/**
 * Fused local NCC (`lncc` of `@regkit/losses`): inputs `a`, `b` `[B, ...S, C]` float32;
 * outputs `[loss]`, or `[loss, dLoss/da, dLoss/db]` with `withGrad`. The loss is −mean(cc)
 * over zero-padded 'same' windows (VoxelMorph's NCC); see packages/losses/src/lncc_kernel.ts.
 */
export const RegkitLocalNcc = 'RegkitLocalNcc';
/** Attributes of {@link RegkitLocalNcc}: odd window per spatial axis, and whether to return the gradients. */
export interface RegkitLocalNccAttrs {
  window: number[];
  withGrad: boolean;
}

/**
 * MIND-SSC descriptor (`mindSsc` of `@regkit/losses`): input `image`
 * `[B, ...S, 1]` float32, output `[B, ...S, P]` with, for output channel c and its offset
 * pair (p_c, q_c) (voxels along the spatial axes, dilation applied),
 * ssd_c = replicate-border box mean over (2·radius+1)^nd of (I(x + p_c) − I(x + q_c))²,
 * d_c = ssd_c − min_c ssd, V = mean_c d_c clamped to [0.001, 1000] × its mean over all
 * voxels and batch items, out_c = exp(−d_c / V).
 */
export const RegkitMindSsc = 'RegkitMindSsc';
/**
 * Gradient of {@link RegkitMindSsc}: inputs `dy` `[B, ...S, P]` and `image` `[B, ...S, 1]`;
 * output dImage `[B, ...S, 1]`, with the global mean of V held constant (no gradient through
 * it) and the min over channels differentiated as tfjs's `Min` (every channel equal to the
 * min gets the whole gradient of the min). The attributes of the forward.
 */
export const RegkitMindSscGrad = 'RegkitMindSscGrad';
/** Attributes of {@link RegkitMindSsc} and {@link RegkitMindSscGrad}: box radius, and the offset pairs `[p, q]` per output channel (each of length nd). */
export interface RegkitMindSscAttrs {
  radius: number;
  pairs: Array<[number[], number[]]>;
}

/**
 * Gaussian Parzen-window joint histogram (mutual information losses of `@regkit/losses`):
 * inputs `a`, `b` `[B, N]` float32; output `[B, bins² + 2·bins]`, per batch item
 * p(a, b) (row-major, row = bin of a), p(a), p(b), with MONAI's definition (intensities
 * mapped from [lo, lo + range] to [0, 1] and clamped, bin centres k/(bins − 1),
 * σ = sigmaRatio/(bins − 1), weights normalised per sample, p(a, b) = Σ wa wbᵀ / N).
 */
export const RegkitParzenJoint = 'RegkitParzenJoint';
/** Gradient of {@link RegkitParzenJoint}: inputs `a`, `b` and the cotangent `dy` `[B, bins² + 2·bins]`; outputs `[da, db]` `[B, N]`. */
export const RegkitParzenJointGrad = 'RegkitParzenJointGrad';
/** Attributes of both Parzen kernels. */
export interface RegkitParzenJointAttrs {
  bins: number;
  sigmaRatio: number;
  /** intensity mapped to 0 */
  lo: number;
  /** width of the intensity range mapped to [0, 1] */
  range: number;
}

/**
 * Jacobian determinant of a displacement field (`jacobianDeterminant`): input `field`
 * `[B, ...S, nd]` float32 (every spatial size ≥ 2), output `[B, ...S]` = det(I + ∇u), ∇ as
 * `numpy.gradient` with `edge_order=1` (central differences inside, one-sided at the borders,
 * voxel units).
 */
export const RegkitJacobianDet = 'RegkitJacobianDet';
/** Gradient of {@link RegkitJacobianDet}: inputs `dy` `[B, ...S]` and `field`; output `dField` `[B, ...S, nd]`. */
export const RegkitJacobianDetGrad = 'RegkitJacobianDetGrad';
