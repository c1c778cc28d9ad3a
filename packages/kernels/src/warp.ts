/**
 * `RegkitWarp` / `RegkitWarpGrad` and `RegkitResizeLinear` / `RegkitResizeLinearGrad` kernels for the tfjs cpu and wasm backends, running
 * `csrc/warp.c` (WebAssembly SIMD). Inputs are copied into the kernels' own memory,
 * computed there and copied out into tensors of the calling backend.
 */
import {
  RegkitResizeLinear,
  type RegkitResizeLinearAttrs,
  RegkitResizeLinearGrad,
  RegkitWarp,
  type RegkitWarpAttrs,
  RegkitWarpGrad,
  type RegkitWarpGradInputs,
  type RegkitWarpInputs,
  resizeLinearPlan,
  type tf,
} from '@regkit/core';
import { type BackendLike, size } from './backend_io.js';
import { wasmKernels } from './loader.js';
import { runInWasm } from './run_in_wasm.js';

/** [B, D, H, W, C, Do, Ho, Wo, nd] of a warp, 2D as 3D with a depth of 1. */
function warpDims(image: tf.TensorInfo, field: tf.TensorInfo): number[] {
  const nd = field.shape.length - 2;
  const s = image.shape;
  const o = field.shape;
  const C = s[s.length - 1]!;
  return nd === 3
    ? [s[0]!, s[1]!, s[2]!, s[3]!, C, o[1]!, o[2]!, o[3]!, 3]
    : [s[0]!, 1, s[1]!, s[2]!, C, 1, o[1]!, o[2]!, 2];
}

function warpMode(attrs: tf.NamedAttrMap): number {
  const { interpolation, padding } = attrs as unknown as RegkitWarpAttrs;
  return (interpolation === 'nearest' ? 1 : 0) | (padding === 'border' ? 2 : 0);
}

/** Kernel function of `RegkitWarp` (forward): output `[B, ...So, C]`. */
export const warpKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { image, field } = inputs as unknown as RegkitWarpInputs;
  const dims = warpDims(image, field);
  const outShape = [...field.shape.slice(0, -1), dims[4]!];
  const mode = warpMode(attrs ?? {});
  return runInWasm(backend as BackendLike, [image, field], [outShape], ([img, u, out]) =>
    wasmKernels().warp_forward(img!, u!, out!, ...(dims as Dims9), mode),
  )[0]!;
};

/** Kernel function of `RegkitWarpGrad` (backward): outputs `[dImage, dField]`. */
export const warpGradKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, image, field } = inputs as unknown as RegkitWarpGradInputs;
  const dims = warpDims(image, field);
  const mode = warpMode(attrs ?? {});
  return runInWasm(
    backend as BackendLike,
    [dy, image, field],
    [[...image.shape], [...field.shape]],
    ([g, img, u, dImg, dU]) =>
      wasmKernels().warp_backward(g!, img!, u!, dImg!, dU!, ...(dims as Dims9), mode),
  );
};

/**
 * Resizing (`adjoint` false) or its adjoint by separable passes of `resize_axis`, in the order
 * of core's `resizeLinearPlan`; intermediate results live in scratch buffers.
 */
function resizeInWasm(
  backend: BackendLike,
  src: tf.TensorInfo,
  xShape: readonly number[],
  to: readonly number[],
  adjoint: boolean,
): tf.TensorInfo {
  const [batch, channels] = [xShape[0]!, xShape[xShape.length - 1]!];
  const from = xShape.slice(1, -1);
  const outShape = adjoint ? [...xShape] : [batch, ...to, channels];
  const passes = resizeLinearPlan(batch, from, to, channels, adjoint);
  const scratch = passes.slice(0, -1).map((p) => p.outer * p.m * p.inner);
  return runInWasm(
    backend,
    [src],
    [outShape],
    ([input, output, ...tmp]) => {
      if (passes.length === 0) {
        const n = size(outShape);
        new Float32Array(wasmKernels().memory.buffer, output!, n).set(
          new Float32Array(wasmKernels().memory.buffer, input!, n),
        );
        return;
      }
      let from = input!;
      passes.forEach((p, k) => {
        const to = k === passes.length - 1 ? output! : tmp[k]!;
        // the adjoint pass maps p.n values back to p.m: resize_axis takes the forward's sizes
        if (adjoint) wasmKernels().resize_axis(from, to, p.outer, p.m, p.n, p.inner, 1);
        else wasmKernels().resize_axis(from, to, p.outer, p.n, p.m, p.inner, 0);
        from = to;
      });
    },
    scratch,
  )[0]!;
}

/** Kernel function of `RegkitResizeLinear`: output `[B, ...shape, C]`. */
export const resizeLinearKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { x } = inputs as { x: tf.TensorInfo };
  const { shape } = attrs as unknown as RegkitResizeLinearAttrs;
  return resizeInWasm(backend as BackendLike, x, x.shape, shape, false);
};

/** Kernel function of `RegkitResizeLinearGrad`: `dy` `[B, ...shape, C]` back to the shape of `x`. */
export const resizeLinearGradKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, x } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo };
  const { shape } = attrs as unknown as RegkitResizeLinearAttrs;
  return resizeInWasm(backend as BackendLike, dy, x.shape, shape, true);
};

type Dims9 = [number, number, number, number, number, number, number, number, number];

/**
 * The kernel configs of the WebAssembly warp and linear resize (forward and gradient) for
 * one backend.
 */
export function warpKernelConfigs(backendName: string): tf.KernelConfig[] {
  return [
    { kernelName: RegkitWarp, backendName, kernelFunc: warpKernelFunc },
    { kernelName: RegkitWarpGrad, backendName, kernelFunc: warpGradKernelFunc },
    { kernelName: RegkitResizeLinear, backendName, kernelFunc: resizeLinearKernelFunc },
    { kernelName: RegkitResizeLinearGrad, backendName, kernelFunc: resizeLinearGradKernelFunc },
  ];
}
