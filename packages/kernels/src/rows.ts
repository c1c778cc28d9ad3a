/**
 * Row kernels of the channels-last U-Net layers, replacing tfjs's on the cpu and wasm
 * backends where they apply (else the kernel registered before runs): `Sum` over the leading
 * axes (the bias gradient), `Concat` along the last axis (the skip connections) and `SplitV`
 * along the last axis (concat's gradient). `csrc/elementwise.c`, on worker threads; the sum
 * adds fixed chunks of rows in order, so every thread count gives the same bits.
 */
import { tf } from '@regkit/core';
import { type BackendLike, size } from './backend_io.js';
import { configWithFallback, type Impl } from './fallback.js';
import { runThreaded } from './loader.js';
import { runInWasm, threadsFor } from './run_in_wasm.js';
import { splitRange } from './threads.js';

/** Fewest values for these kernels: smaller calls run tfjs's own (no copies, no threads). */
const MIN_VALUES = 65536;
/** Values per chunk of the sum (rows per chunk = ⌈CHUNK_VALUES / C⌉). */
const CHUNK_VALUES = 65536;

/** `Sum` over axes 0..k-1 (k < rank) of float32 x: [R, C] → [C] in `csrc/elementwise.c`. */
const sum: Impl = ({ inputs, backend, attrs }, fallback) => {
  const { x } = inputs as { x: tf.TensorInfo };
  const { axis, keepDims } = attrs as unknown as { axis: number | number[]; keepDims: boolean };
  if (x.dtype !== 'float32' || size(x.shape) < MIN_VALUES) return fallback();
  const axes = tf.util.parseAxisParam(axis, x.shape).sort((a, b) => a - b);
  const k = axes.length;
  if (k === 0 || k >= x.shape.length || axes.some((a, i) => a !== i)) return fallback();
  const R = size(x.shape.slice(0, k));
  const kept = x.shape.slice(k);
  const C = size(kept);
  const rows = Math.ceil(CHUNK_VALUES / C);
  const chunks = Math.ceil(R / rows);
  const outShape = keepDims ? [...new Array<number>(k).fill(1), ...kept] : kept;
  return runInWasm(
    backend as BackendLike,
    [x],
    [outShape],
    ([px, pout, partials]) => {
      runThreaded(
        splitRange(chunks, threadsFor(R * C)).map(([k0, k1]) => ({
          fn: 'sum_rows_chunks',
          args: [px!, R, C, rows, partials!, k0, k1],
        })),
      );
      runThreaded([{ fn: 'sum_rows_finish', args: [partials!, chunks, C, pout!, 0, C] }]);
    },
    [chunks * C],
  )[0]!;
};

/** Rows R and widths C_i of float32 parts joined along their last axis, or null. */
function lastAxisParts(
  parts: tf.TensorInfo[],
  axis: number,
): { R: number; widths: number[] } | null {
  const rank = parts[0]?.shape.length ?? 0;
  if (parts.length < 2 || rank < 2) return null;
  const ax = tf.util.parseAxisParam(axis, parts[0]!.shape)[0];
  if (ax !== rank - 1) return null;
  const lead = parts[0]!.shape.slice(0, -1).join();
  for (const p of parts) {
    if (p.dtype !== 'float32' || p.shape.length !== rank || p.shape.slice(0, -1).join() !== lead)
      return null;
  }
  const widths = parts.map((p) => p.shape[rank - 1]!);
  const R = size(parts[0]!.shape.slice(0, -1));
  return widths.every((c) => c > 0) && R > 0 ? { R, widths } : null;
}

/** The pointer/width table of `concat_rows` and the calls over the rows. */
function concatCalls(
  arena: { i32(ptr: number, n: number): Int32Array },
  table: number,
  parts: number[],
  widths: number[],
  whole: number,
  toWhole: number,
  R: number,
) {
  arena.i32(table, 2 * parts.length).set(parts.flatMap((p, i) => [p, widths[i]!]));
  const total = widths.reduce((a, b) => a + b, 0);
  return splitRange(R, threadsFor(R * total)).map(([r0, r1]) => ({
    fn: 'concat_rows',
    args: [table, parts.length, whole, toWhole, r0, r1],
  }));
}

/** `Concat` of float32 tensors along the last axis. */
const concat: Impl = ({ inputs, backend, attrs }, fallback) => {
  const parts = inputs as unknown as tf.TensorInfo[];
  const { axis } = attrs as unknown as { axis: number };
  const geo = lastAxisParts(parts, axis);
  if (!geo || size(parts[0]!.shape) * parts.length < MIN_VALUES) return fallback();
  const total = geo.widths.reduce((a, b) => a + b, 0);
  const outShape = [...parts[0]!.shape.slice(0, -1), total];
  return runInWasm(
    backend as BackendLike,
    parts,
    [outShape],
    (ptrs, arena) => {
      const n = parts.length;
      const calls = concatCalls(
        arena,
        ptrs[n + 1]!,
        ptrs.slice(0, n),
        geo.widths,
        ptrs[n]!,
        1,
        geo.R,
      );
      runThreaded(calls);
    },
    [2 * parts.length],
  )[0]!;
};

/** `SplitV` of a float32 tensor along its last axis. */
const splitV: Impl = ({ inputs, backend, attrs }, fallback) => {
  const { x } = inputs as { x: tf.TensorInfo };
  const { numOrSizeSplits, axis } = attrs as unknown as {
    numOrSizeSplits: number | number[];
    axis: number;
  };
  const rank = x.shape.length;
  if (x.dtype !== 'float32' || rank < 2 || size(x.shape) < MIN_VALUES) return fallback();
  if (tf.util.parseAxisParam(axis, x.shape)[0] !== rank - 1) return fallback();
  const widths = tf.backend_util.prepareSplitSize(
    x as unknown as tf.Tensor,
    numOrSizeSplits,
    rank - 1,
  ) as number[];
  if (widths.length < 2 || widths.some((c) => c <= 0)) return fallback();
  const R = size(x.shape.slice(0, -1));
  const outShapes = widths.map((c) => [...x.shape.slice(0, -1), c]);
  return runInWasm(
    backend as BackendLike,
    [x],
    outShapes,
    (ptrs, arena) => {
      const n = widths.length;
      runThreaded(concatCalls(arena, ptrs[n + 1]!, ptrs.slice(1, n + 1), widths, ptrs[0]!, 0, R));
    },
    [2 * widths.length],
  );
};

/** Kernel names these configs replace. */
export const ROW_KERNEL_NAMES = ['Sum', 'Concat', 'SplitV'] as const;

/** The configs of `Sum`, `Concat` and `SplitV` for one backend (with fallbacks). */
export function rowKernelConfigs(backendName: string): tf.KernelConfig[] {
  return [
    configWithFallback('Sum', backendName, sum),
    configWithFallback('Concat', backendName, concat),
    configWithFallback('SplitV', backendName, splitV),
  ];
}
