/**
 * `RegkitWarp` / `RegkitWarpGrad` (and the gradients alone, `RegkitWarpImageGrad`,
 * `RegkitWarpFieldGrad`) and `RegkitResizeLinear` / `RegkitResizeLinearGrad` kernels for the
 * tfjs cpu and wasm backends, running
 * `csrc/warp.c` (WebAssembly SIMD). Inputs are copied into the kernels' own memory,
 * computed there and copied out into tensors of the calling backend.
 */
import {
  RegkitResizeLinear,
  type RegkitResizeLinearAttrs,
  RegkitResizeLinearGrad,
  RegkitWarp,
  type RegkitWarpAttrs,
  RegkitWarpFieldGrad,
  RegkitWarpGrad,
  type RegkitWarpGradInputs,
  RegkitWarpImageGrad,
  type RegkitWarpInputs,
  resizeLinearPlan,
  type tf,
} from '@regkit/core';
import { type BackendLike, size } from './backend_io.js';
import type { Arena } from './loader.js';
import { runThreaded, wasmKernels } from './loader.js';
import { runInWasm, threadsFor } from './run_in_wasm.js';
import { splitRange } from './threads.js';

/**
 * Output values per chunk of the backward pass (per batch item; a function of the shape
 * only, so that results do not depend on the thread count): each chunk scatters its image
 * gradient into a slab of its own, and the slabs are added in chunk order.
 */
const WARP_CHUNK_VALUES = 65536;

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

/** Mode bits of `csrc/warp.c`'s backward: skip the image gradient, or the field gradient. */
const MODE_NO_IMAGE = 4;
const MODE_NO_FIELD = 8;

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
  const [B, , , , , Do, Ho] = dims;
  const ranges = splitRange(B! * Do! * Ho!, threadsFor(size(outShape)));
  // the inputs are only read: warp(u, u) (composition, squaring) copies u in once
  return runInWasm(
    backend as BackendLike,
    [image, field],
    [outShape],
    ([img, u, out]) =>
      runThreaded(
        ranges.map(([r0, r1]) => ({
          fn: 'warp_forward',
          args: [img!, u!, out!, ...dims, mode, r0, r1],
        })),
      ),
    [],
    true,
  )[0]!;
};

/**
 * The backward pass of a warp in the kernels' memory (byte offsets): per batch item, the
 * output rows in fixed chunks of {@link WARP_CHUNK_VALUES}; up to one chunk per thread at a
 * time scatters into a slab of dImage (the image units it touches, from `warp_touched`),
 * then the slabs are added into dImage in chunk order (`warp_reduce`, split by units).
 */
function warpBackward(
  arena: Arena,
  [g, img, u, dImg, dU]: number[],
  dims: number[],
  mode: number,
): void {
  const [B, D, H, W, C, Do, Ho, Wo, nd] = dims as Dims9;
  const rows = Do * Ho;
  // chunks of (nearly) equal rows, about WARP_CHUNK_VALUES values each: the threads of a wave
  // get equal work
  const chunkRows = Math.max(1, Math.ceil(WARP_CHUNK_VALUES / (Wo * C)));
  const chunks = Math.ceil(rows / chunkRows);
  const units = nd === 3 ? D : H;
  const unit = (nd === 3 ? H * W : W) * C;
  const imageBytes = 4 * D * H * W * C;
  const rest = [D, H, W, C, Do, Ho, Wo, nd, mode];
  const threads = Math.min(threadsFor(B * rows * Wo * C), chunks);
  for (let b = 0; b < B; b++) {
    const ptr = {
      g: g! + 4 * b * rows * Wo * C,
      img: img! + b * imageBytes,
      u: u! + 4 * b * rows * Wo * nd,
      dImg: dImg! + b * imageBytes,
      dU: dU! + 4 * b * rows * Wo * nd,
    };
    // as warp_touched: chunk k is rows floor(k rows / chunks) .. floor((k + 1) rows / chunks)
    const rowsOf = (k: number) => [
      Math.floor((k * rows) / chunks),
      Math.floor(((k + 1) * rows) / chunks),
    ];
    if (chunks === 1) {
      const args = [ptr.g, ptr.img, ptr.u, ptr.dImg, ptr.dU, ...rest, 0, rows, 0, units - 1];
      runThreaded([{ fn: 'warp_backward_rows', args }]);
      continue;
    }
    const mark = arena.mark();
    const rangePtr = arena.alloc(2 * chunks);
    runThreaded(
      splitRange(chunks, threads).map(([k0, k1]) => ({
        fn: 'warp_touched',
        args: [ptr.u, D, H, Do, Ho, Wo, nd, mode, chunks, k0, k1, rangePtr],
      })),
    );
    const range = Array.from(arena.i32(rangePtr, 2 * chunks));
    runThreaded(
      splitRange(units * unit, threads, 4).map(([a, e]) => ({
        fn: 'zero_f32',
        args: [ptr.dImg + 4 * a, e - a],
      })),
    );
    for (let w = 0; w < chunks; w += threads) {
      const wave = Array.from({ length: Math.min(threads, chunks - w) }, (_, t) => w + t);
      const waveMark = arena.mark();
      const slabs = wave.map((k) => {
        const [lo, hi] = [range[2 * k]!, range[2 * k + 1]!];
        return arena.alloc(Math.max(1, hi - lo + 1) * unit);
      });
      const slabsPtr = arena.alloc(wave.length);
      const wavePtr = arena.alloc(2 * wave.length);
      arena.i32(slabsPtr, wave.length).set(slabs);
      arena.i32(wavePtr, 2 * wave.length).set(range.slice(2 * w, 2 * (w + wave.length)));
      runThreaded(
        wave.map((k, t) => ({
          fn: 'warp_backward_rows',
          args: [
            ptr.g,
            ptr.img,
            ptr.u,
            slabs[t]!,
            ptr.dU,
            ...rest,
            ...rowsOf(k),
            range[2 * k]!,
            range[2 * k + 1]!,
          ],
        })),
      );
      let first = units;
      let last = -1;
      for (const k of wave) {
        if (range[2 * k + 1]! < range[2 * k]!) continue;
        first = Math.min(first, range[2 * k]!);
        last = Math.max(last, range[2 * k + 1]!);
      }
      if (last >= first) {
        runThreaded(
          splitRange(last - first + 1, threads).map(([a, e]) => ({
            fn: 'warp_reduce',
            args: [ptr.dImg, unit, first + a, first + e, wave.length, slabsPtr, wavePtr],
          })),
        );
      }
      arena.release(waveMark);
    }
    arena.release(mark);
  }
}

/** Kernel function of `RegkitWarpGrad` (backward): outputs `[dImage, dField]`. */
export const warpGradKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, image, field } = inputs as unknown as RegkitWarpGradInputs;
  const dims = warpDims(image, field);
  const mode = warpMode(attrs ?? {});
  return runInWasm(
    backend as BackendLike,
    [dy, image, field],
    [[...image.shape], [...field.shape]],
    (ptrs, arena) => warpBackward(arena, ptrs, dims, mode),
    [],
    true, // read only: a squaring's backward (image = field = u) copies u in once
  );
};

/**
 * Kernel function of `RegkitWarpImageGrad`: output dImage (the scatter of dy, in the chunks
 * and slabs of the full backward pass, so it equals `RegkitWarpGrad`'s dImage bit for bit);
 * the image values are not read, so only dy and the field are copied in.
 */
export const warpImageGradKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, image, field } = inputs as unknown as RegkitWarpGradInputs;
  const dims = warpDims(image, field);
  const mode = warpMode(attrs ?? {}) | MODE_NO_FIELD;
  return runInWasm(backend as BackendLike, [dy, field], [[...image.shape]], ([g, u, dImg], arena) =>
    warpBackward(arena, [g!, 0, u!, dImg!, 0], dims, mode),
  )[0]!;
};

/**
 * Kernel function of `RegkitWarpFieldGrad`: output dField. Every output voxel's gradient is
 * its own (no scatter), so the rows are split over the threads directly.
 */
export const warpFieldGradKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, image, field } = inputs as unknown as RegkitWarpGradInputs;
  const dims = warpDims(image, field);
  const mode = warpMode(attrs ?? {}) | MODE_NO_IMAGE;
  const [B, D, H, W, C, Do, Ho, Wo, nd] = dims as Dims9;
  const rows = Do * Ho;
  const ranges = splitRange(rows, threadsFor(B * rows * Wo * C));
  return runInWasm(
    backend as BackendLike,
    [dy, image, field],
    [[...field.shape]],
    ([g, img, u, dU]) => {
      for (let b = 0; b < B; b++) {
        const [gb, imgb] = [g! + 4 * b * rows * Wo * C, img! + 4 * b * D * H * W * C];
        const [ub, dUb] = [u! + 4 * b * rows * Wo * nd, dU! + 4 * b * rows * Wo * nd];
        runThreaded(
          ranges.map(([r0, r1]) => ({
            fn: 'warp_backward_rows',
            args: [gb, imgb, ub, 0, dUb, D, H, W, C, Do, Ho, Wo, nd, mode, r0, r1, 0, -1],
          })),
        );
      }
    },
  )[0]!;
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
        const [n, m] = adjoint ? [p.m, p.n] : [p.n, p.m];
        const threads = threadsFor(p.outer * Math.max(n, m) * p.inner);
        // each thread: a range of the outer index, or of the inner one when outer is small
        const calls =
          p.outer >= threads
            ? splitRange(p.outer, threads).map(([o0, o1]) => [o0, o1, 0, p.inner])
            : splitRange(p.inner, threads, 4).map(([q0, q1]) => [0, p.outer, q0, q1]);
        runThreaded(
          calls.map((r) => ({
            fn: 'resize_axis',
            args: [from, to, p.outer, n, m, p.inner, adjoint ? 1 : 0, ...r],
          })),
        );
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
    { kernelName: RegkitWarpImageGrad, backendName, kernelFunc: warpImageGradKernelFunc },
    { kernelName: RegkitWarpFieldGrad, backendName, kernelFunc: warpFieldGradKernelFunc },
    { kernelName: RegkitResizeLinear, backendName, kernelFunc: resizeLinearKernelFunc },
    { kernelName: RegkitResizeLinearGrad, backendName, kernelFunc: resizeLinearGradKernelFunc },
  ];
}
