import { isWasmBackend, type KernelBackendLike, makeOutput, makeWasmOutput } from './backend_io.js';
import { tf } from './tf.js';

type KernelFunc = tf.KernelConfig['kernelFunc'];

/**
 * Merges adjacent axes of a slice where the inner axis is taken whole, or the outer one has
 * size 1, so that a slice of a rank-5 field along one spatial axis becomes a rank ≤ 2 copy of
 * long contiguous runs.
 */
export function collapseSlice(
  shape: readonly number[],
  begin: readonly number[],
  size: readonly number[],
): { shape: number[]; begin: number[]; size: number[] } {
  const s = [shape[0] ?? 1];
  const b = [begin[0] ?? 0];
  const z = [size[0] ?? 1];
  for (let i = 1; i < shape.length; i++) {
    const last = s.length - 1;
    if (begin[i] === 0 && size[i] === shape[i]) {
      // rows of the outer axis, each taken whole: one longer axis
      s[last] = s[last]! * shape[i]!;
      b[last] = b[last]! * shape[i]!;
      z[last] = z[last]! * shape[i]!;
    } else if (z[last] === 1) {
      // a single outer index: an offset into the inner axis
      s[last] = s[last]! * shape[i]!;
      b[last] = b[last]! * shape[i]! + begin[i]!;
      z[last] = size[i]!;
    } else {
      s.push(shape[i]!);
      b.push(begin[i]!);
      z.push(size[i]!);
    }
  }
  return { shape: s, begin: b, size: z };
}

/** Copies the slice `begin`/`size` of `x` (row-major `shape`) into `out`. */
export function sliceCopy(
  x: tf.TypedArray,
  shape: readonly number[],
  begin: readonly number[],
  size: readonly number[],
  out: tf.TypedArray,
): void {
  const c = collapseSlice(shape, begin, size);
  const rank = c.shape.length;
  const strides = new Array<number>(rank).fill(1);
  for (let i = rank - 2; i >= 0; i--) strides[i] = strides[i + 1]! * c.shape[i + 1]!;
  const inner = c.size[rank - 1]!;
  const outer = c.size.slice(0, -1).reduce((a, v) => a * v, 1);
  if (inner === 0 || outer === 0) return;
  const idx = new Array<number>(Math.max(0, rank - 1)).fill(0);
  let src = c.begin.reduce((a, v, i) => a + v * strides[i]!, 0);
  const typed = x as Float32Array;
  const dst = out as Float32Array;
  for (let o = 0, pos = 0; o < outer; o++, pos += inner) {
    if (inner > 16) dst.set(typed.subarray(src, src + inner), pos);
    else for (let j = 0; j < inner; j++) dst[pos + j] = typed[src + j]!;
    // odometer over the outer axes
    for (let a = rank - 2; a >= 0; a--) {
      idx[a]!++;
      src += strides[a]!;
      if (idx[a]! < c.size[a]!) break;
      src -= idx[a]! * strides[a]!;
      idx[a] = 0;
    }
  }
}

/** The typed array a backend stores `dtype` in (cpu and wasm: bool as Uint8Array). */
function typedArrayFor(dtype: 'float32' | 'int32' | 'bool', n: number): tf.TypedArray {
  if (dtype === 'int32') return new Int32Array(n);
  if (dtype === 'bool') return new Uint8Array(n);
  return new Float32Array(n);
}

/**
 * A `Slice` kernel for cpu and wasm: the stock ones copy element by element through
 * `tf.buffer` above rank 4 and row by row for short last axes (a slice of a
 * `[1, 46, 55, 46, 3]` field takes over a second on wasm); this one merges whole axes and
 * copies contiguous runs. Strings and complex numbers go to the stock kernel.
 */
export function fastSliceKernel(stock: KernelFunc | undefined): KernelFunc {
  return (args) => {
    const { inputs, backend, attrs } = args;
    const x = (inputs as { x: tf.TensorInfo }).x;
    const dtype = x.dtype;
    if (dtype !== 'float32' && dtype !== 'int32' && dtype !== 'bool') {
      if (!stock) throw new Error(`regkit: no stock Slice kernel for dtype ${dtype}`);
      return stock(args);
    }
    const a = attrs as unknown as { begin: number | number[]; size?: number | number[] };
    const [begin, size] = tf.slice_util.parseSliceParams(x, a.begin, a.size) as [
      number[],
      number[],
    ];
    tf.slice_util.assertParamsValid(x, begin, size);
    const b = backend as KernelBackendLike;
    const n = size.reduce((p, v) => p * v, 1);
    if (isWasmBackend(b)) {
      // allocate first: growing the heap detaches earlier views
      const info = makeWasmOutput(b, size, dtype);
      if (n > 0)
        sliceCopy(b.typedArrayFromHeap!(x), x.shape, begin, size, b.typedArrayFromHeap!(info));
      return info;
    }
    const out = typedArrayFor(dtype, n);
    const values = b.readSync(x.dataId) as tf.TypedArray;
    const c = collapseSlice(x.shape, begin, size);
    if (c.shape.length === 1 && values.constructor === out.constructor) {
      // one contiguous run: share the buffer like the stock cpu kernel (tensors are immutable)
      return makeOutput(b, size, dtype, values.subarray(c.begin[0]!, c.begin[0]! + n));
    }
    if (n > 0) sliceCopy(values, x.shape, begin, size, out);
    return makeOutput(b, size, dtype, out);
  };
}

/**
 * A `SplitV` kernel for cpu and wasm (the gradient of `concat`, and `tf.split`): the stock ones
 * call their own slow slice directly, not the registered `Slice` (a split of a reflect-padded
 * `[1, 69, 61, 39, 3]` field took 180 ms on wasm); this one slices with
 * {@link fastSliceKernel}.
 */
export function fastSplitKernel(fastSlice: KernelFunc): KernelFunc {
  return (args) => {
    const { inputs, backend, attrs } = args;
    const x = (inputs as { x: tf.TensorInfo }).x;
    const a = attrs as unknown as { numOrSizeSplits: number | number[]; axis: number | number[] };
    const axis = tf.util.parseAxisParam(a.axis, x.shape)[0]!;
    const n = x.shape[axis]!;
    let sizes: number[];
    if (typeof a.numOrSizeSplits === 'number') {
      if (n % a.numOrSizeSplits !== 0) {
        throw new Error(`SplitV: axis size ${n} is not divisible by ${a.numOrSizeSplits}`);
      }
      sizes = new Array<number>(a.numOrSizeSplits).fill(n / a.numOrSizeSplits);
    } else {
      sizes = [...a.numOrSizeSplits];
      const free = sizes.indexOf(-1);
      if (free >= 0) sizes[free] = n - sizes.reduce((p, v) => (v === -1 ? p : p + v), 0);
      if (sizes.reduce((p, v) => p + v, 0) !== n || sizes.some((v) => v < 0)) {
        throw new Error(`SplitV: sizes ${JSON.stringify(a.numOrSizeSplits)} do not sum to ${n}`);
      }
    }
    const begin = new Array<number>(x.shape.length).fill(0);
    return sizes.map((s) => {
      const size = x.shape.map((v, k) => (k === axis ? s : v));
      const out = fastSlice({ inputs: { x }, backend, attrs: { begin: [...begin], size } });
      begin[axis]! += s;
      return out as tf.TensorInfo;
    });
  };
}
