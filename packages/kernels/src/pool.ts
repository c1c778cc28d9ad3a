/**
 * `RegkitMaxPool` and `RegkitMaxPoolGrad` (max pooling of whole windows and its gradient) and
 * `RegkitUpsampleNearest` and `RegkitUpsampleNearestGrad` (nearest upsampling and its adjoint,
 * block sums): the contracts in `@regkit/core`, used by its `maxPool` and `upsampleNearest`,
 * for the tfjs cpu and wasm backends, running `csrc/elementwise.c` (WebAssembly SIMD over
 * channels) on worker threads over rows. Windows and blocks do not overlap, so every value is
 * computed by one thread: results are bit-identical at any thread count, and to core's
 * JavaScript kernels.
 */
import {
  RegkitMaxPool,
  type RegkitMaxPoolAttrs,
  RegkitMaxPoolGrad,
  type RegkitUpsampleAttrs,
  RegkitUpsampleNearest,
  RegkitUpsampleNearestGrad,
  type tf,
} from '@regkit/core';
import { type BackendLike, size as sizeOf } from './backend_io.js';
import { runThreaded } from './loader.js';
import { runInWasm, threadsFor } from './run_in_wasm.js';
import { splitRange } from './threads.js';

/** [D, H, W, C, sd, rows] of `x` `[B, ...S, C]` pooled by `size` (2D: D = 1, sd = 1). */
function geometry(kernel: string, shape: readonly number[], size: number): number[] {
  const nd = shape.length - 2;
  const spatial = shape.slice(1, -1);
  if ((nd !== 2 && nd !== 3) || !(size >= 1) || spatial.some((n) => n % size !== 0)) {
    throw new Error(
      `${kernel}: 'x' must be [B, H, W, C] or [B, D, H, W, C] with spatial sizes divisible by size ${size}, got [${shape.join(', ')}]`,
    );
  }
  const [B, C] = [shape[0]!, shape[nd + 1]!];
  const [D, H, W] = nd === 3 ? spatial : [1, ...spatial];
  const sd = nd === 3 ? size : 1;
  return [D!, H!, W!, C, sd, B * (D! / sd) * (H! / size)];
}

/** Kernel function of `RegkitMaxPool`: x `[B, ...S, C]` → the window maxima `[B, ...S/size, C]`. */
export const maxPoolKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { x } = inputs as { x: tf.TensorInfo };
  const { size } = attrs as unknown as RegkitMaxPoolAttrs;
  const [D, H, W, C, sd, rows] = geometry(RegkitMaxPool, x.shape, size);
  const outShape = x.shape.map((n, i) => (i === 0 || i === x.shape.length - 1 ? n : n / size));
  if (sizeOf(outShape) === 0)
    return runInWasm(backend as BackendLike, [x], [outShape], () => {})[0]!;
  return runInWasm(backend as BackendLike, [x], [outShape], ([px, py]) => {
    runThreaded(
      splitRange(rows!, threadsFor(sizeOf(x.shape))).map(([r0, r1]) => ({
        fn: 'max_pool',
        args: [px!, py!, D!, H!, W!, C!, sd!, size, r0, r1],
      })),
    );
  })[0]!;
};

/** Kernel function of `RegkitMaxPoolGrad`: dy, x → dx (dy at each window's first maximum). */
export const maxPoolGradKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, x } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo };
  const { size } = attrs as unknown as RegkitMaxPoolAttrs;
  const [D, H, W, C, sd, rows] = geometry(RegkitMaxPoolGrad, x.shape, size);
  if (sizeOf(x.shape) === 0)
    return runInWasm(backend as BackendLike, [], [[...x.shape]], () => {})[0]!;
  return runInWasm(backend as BackendLike, [dy, x], [[...x.shape]], ([pdy, px, pdx]) => {
    runThreaded(
      splitRange(rows!, threadsFor(sizeOf(x.shape))).map(([r0, r1]) => ({
        fn: 'max_pool_grad',
        args: [pdy!, px!, pdx!, D!, H!, W!, C!, sd!, size, r0, r1],
      })),
    );
  })[0]!;
};

/** Kernel function of `RegkitUpsampleNearest`: x `[B, ...S, C]` → `[B, ...S·factor, C]`. */
export const upsampleNearestKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { x } = inputs as { x: tf.TensorInfo };
  const { factor } = attrs as unknown as RegkitUpsampleAttrs;
  const outShape = x.shape.map((n, i) => (i === 0 || i === x.shape.length - 1 ? n : n * factor));
  const [D, H, W, C] = geometry(RegkitUpsampleNearest, x.shape, 1);
  const fd = nd(x.shape) === 3 ? factor : 1;
  const rows = x.shape[0]! * D! * fd * H! * factor;
  return runInWasm(backend as BackendLike, [x], [outShape], ([px, py]) => {
    if (sizeOf(outShape) === 0) return;
    runThreaded(
      splitRange(rows, threadsFor(sizeOf(outShape))).map(([r0, r1]) => ({
        fn: 'upsample_nearest',
        args: [px!, py!, D!, H!, W!, C!, fd, factor, r0, r1],
      })),
    );
  })[0]!;
};

/** Kernel function of `RegkitUpsampleNearestGrad`: dy `[B, ...S·factor, C]` → block sums `[B, ...S, C]`. */
export const upsampleNearestGradKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy } = inputs as { dy: tf.TensorInfo };
  const { factor } = attrs as unknown as RegkitUpsampleAttrs;
  geometry(RegkitUpsampleNearestGrad, dy.shape, factor); // dy's sizes: multiples of factor
  const inShape = dy.shape.map((n, i) => (i === 0 || i === dy.shape.length - 1 ? n : n / factor));
  const [D, H, W, C, , rows] = geometry(RegkitUpsampleNearestGrad, inShape, 1);
  return runInWasm(backend as BackendLike, [dy], [inShape], ([pdy, pdx]) => {
    if (sizeOf(inShape) === 0) return;
    runThreaded(
      splitRange(rows!, threadsFor(sizeOf(dy.shape))).map(([r0, r1]) => ({
        fn: 'upsample_nearest_grad',
        args: [pdy!, pdx!, D!, H!, W!, C!, nd(dy.shape) === 3 ? factor : 1, factor, r0, r1],
      })),
    );
  })[0]!;
};

/** Spatial dimensions of `[B, ...S, C]`. */
const nd = (shape: readonly number[]) => shape.length - 2;

/**
 * The kernel configs of `RegkitMaxPool`, `RegkitMaxPoolGrad`, `RegkitUpsampleNearest` and
 * `RegkitUpsampleNearestGrad` for one backend.
 */
export function maxPoolKernelConfigs(backendName: string): tf.KernelConfig[] {
  return [
    { kernelName: RegkitMaxPool, backendName, kernelFunc: maxPoolKernelFunc },
    { kernelName: RegkitMaxPoolGrad, backendName, kernelFunc: maxPoolGradKernelFunc },
    { kernelName: RegkitUpsampleNearest, backendName, kernelFunc: upsampleNearestKernelFunc },
    {
      kernelName: RegkitUpsampleNearestGrad,
      backendName,
      kernelFunc: upsampleNearestGradKernelFunc,
    },
  ];
}
