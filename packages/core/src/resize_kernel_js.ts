/**
 * Plain-JavaScript `RegkitResizeLinear` and its adjoint: separable linear interpolation
 * with aligned corners, one spatial axis per pass (2 multiply-adds per output value).
 */
import { type KernelBackendLike, runFloatKernel } from './backend_io.js';
import {
  RegkitResizeLinear,
  type RegkitResizeLinearAttrs,
  RegkitResizeLinearGrad,
} from './kernel_names.js';
import type { tf } from './tf.js';

/** Taps of one axis resized from `n` to `m` samples: output i = (1 − t) in[j0] + t in[j1]. */
interface AxisTaps {
  j0: Int32Array;
  j1: Int32Array;
  t: Float64Array;
}

/** Aligned-corner taps: output i samples the input at i (n − 1)/(m − 1) (0 when n or m is 1). */
function axisTaps(n: number, m: number): AxisTaps {
  const j0 = new Int32Array(m);
  const j1 = new Int32Array(m);
  const t = new Float64Array(m);
  const r = n > 1 && m > 1 ? (n - 1) / (m - 1) : 0;
  for (let i = 0; i < m; i++) {
    const p = i * r;
    const j = Math.min(Math.floor(p), Math.max(n - 2, 0));
    j0[i] = j;
    j1[i] = Math.min(j + 1, n - 1);
    t[i] = n > 1 ? p - j : 0;
  }
  return { j0, j1, t };
}

/** One axis pass of a separable resize: `[outer, n, inner]` to `[outer, m, inner]`. */
export interface ResizePass {
  axis: number;
  outer: number;
  n: number;
  m: number;
  inner: number;
}

/** Every order of `items`. */
function permutations(items: number[]): number[][] {
  if (items.length <= 1) return [items];
  return items.flatMap((x, i) =>
    permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [x, ...rest]),
  );
}

/**
 * The axis passes of resizing `[batch, ...from, channels]` to `[batch, ...to, channels]`, or
 * of its adjoint (`to` back to `from`), in the cheapest order: the one that writes the fewest
 * values, counting passes with fewer than 4 contiguous values per tap twice (they cannot use
 * vector instructions). Axes whose size does not change are skipped.
 */
export function resizeLinearPlan(
  batch: number,
  from: readonly number[],
  to: readonly number[],
  channels: number,
  adjoint: boolean,
): ResizePass[] {
  const start = adjoint ? to : from;
  const target = adjoint ? from : to;
  const axes = start.map((_, k) => k).filter((k) => start[k] !== target[k]);
  let best: ResizePass[] = [];
  let bestCost = Number.POSITIVE_INFINITY;
  for (const order of permutations(axes)) {
    const cur = [...start];
    let cost = 0;
    const passes = order.map((axis) => {
      const outer = batch * cur.slice(0, axis).reduce((a, b) => a * b, 1);
      const inner = channels * cur.slice(axis + 1).reduce((a, b) => a * b, 1);
      const pass = { axis, outer, n: cur[axis]!, m: target[axis]!, inner };
      cur[axis] = target[axis]!;
      cost += outer * pass.m * inner * (inner < 4 ? 2 : 1);
      return pass;
    });
    if (cost < bestCost) [best, bestCost] = [passes, cost];
  }
  return best;
}

/** One forward pass: `src` `[outer, n, inner]` to `dst` `[outer, m, inner]`. */
function resizeAxis(
  src: Float32Array,
  dst: Float32Array,
  outer: number,
  n: number,
  inner: number,
  taps: AxisTaps,
): void {
  const m = taps.t.length;
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < m; i++) {
      const w1 = taps.t[i]!;
      const w0 = 1 - w1;
      const a = (o * n + taps.j0[i]!) * inner;
      const b = (o * n + taps.j1[i]!) * inner;
      const d = (o * m + i) * inner;
      for (let q = 0; q < inner; q++) dst[d + q] = w0 * src[a + q]! + w1 * src[b + q]!;
    }
  }
}

/** One adjoint pass: `g` `[outer, m, inner]` accumulated into zeroed `dst` `[outer, n, inner]`. */
function resizeAxisAdjoint(
  g: Float32Array,
  dst: Float32Array,
  outer: number,
  n: number,
  inner: number,
  taps: AxisTaps,
): void {
  const m = taps.t.length;
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < m; i++) {
      const w1 = taps.t[i]!;
      const w0 = 1 - w1;
      const a = (o * n + taps.j0[i]!) * inner;
      const b = (o * n + taps.j1[i]!) * inner;
      const d = (o * m + i) * inner;
      for (let q = 0; q < inner; q++) {
        const v = g[d + q]!;
        dst[a + q] = dst[a + q]! + w0 * v;
        dst[b + q] = dst[b + q]! + w1 * v;
      }
    }
  }
}

/**
 * Resizes `src` (`[B, ...from, C]`, row-major) to `dst` (`[B, ...to, C]`), or its adjoint
 * (`adjoint`: `src` is `[B, ...to, C]`, `dst` `[B, ...from, C]`, zero-filled), axis by axis.
 */
function resizeLinearValues(
  src: Float32Array,
  dst: Float32Array,
  batch: number,
  from: readonly number[],
  to: readonly number[],
  channels: number,
  adjoint: boolean,
): void {
  const passes = resizeLinearPlan(batch, from, to, channels, adjoint);
  if (passes.length === 0) {
    dst.set(src);
    return;
  }
  let data = src;
  passes.forEach(({ outer, n, m, inner }, step) => {
    const out = step === passes.length - 1 ? dst : new Float32Array(outer * m * inner);
    // the adjoint pass maps m values back to n: its taps are those of resizing n to m
    if (adjoint) resizeAxisAdjoint(data, out, outer, m, inner, axisTaps(m, n));
    else resizeAxis(data, out, outer, n, inner, axisTaps(n, m));
    data = out;
  });
}

/** `[B, ...S, C]` split into batch, spatial shape and channels. */
function splitShape(shape: readonly number[]): [number, number[], number] {
  return [shape[0]!, shape.slice(1, -1), shape[shape.length - 1]!];
}

/** Plain-JavaScript `RegkitResizeLinear` and `RegkitResizeLinearGrad` for one backend. */
export function jsResizeKernels(backendName: string): tf.KernelConfig[] {
  return [
    {
      kernelName: RegkitResizeLinear,
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { x } = inputs as { x: tf.TensorInfo };
        const { shape } = attrs as unknown as RegkitResizeLinearAttrs;
        const [b, from, c] = splitShape(x.shape);
        return runFloatKernel(
          backend as KernelBackendLike,
          [x],
          [[b, ...shape, c]],
          ([src], [dst]) => resizeLinearValues(src!, dst!, b, from, shape, c, false),
        )[0]!;
      },
    },
    {
      kernelName: RegkitResizeLinearGrad,
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { dy, x } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo };
        const { shape } = attrs as unknown as RegkitResizeLinearAttrs;
        const [b, from, c] = splitShape(x.shape);
        return runFloatKernel(backend as KernelBackendLike, [dy], [[...x.shape]], ([g], [dst]) =>
          resizeLinearValues(g!, dst!, b, from, shape, c, true),
        )[0]!;
      },
    },
  ];
}
