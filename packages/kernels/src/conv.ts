/**
 * 3D and 2D convolution (forward, input gradient, filter gradient; 2D runs as 3D with a
 * depth of 1) and UnsortedSegmentSum kernels for the tfjs `cpu` and `wasm` backends, running
 * `csrc/conv.c` (WebAssembly SIMD, linked into the kernels' module) on worker threads.
 * Inputs are copied into the kernels' shared memory, computed there and copied out into
 * tensors of the calling backend.
 *
 * Threads: the forward and the input gradient split the output into units (Winograd tiles
 * or output rows) computed independently; the filter gradient (a sum over the
 * output) is split into a fixed number of chunks that depends on the shapes only, each
 * summed into a partial of its own, and the partials are added in chunk order. Results are
 * therefore bit-identical at any thread count.
 *
 * Kernel names, inputs and attributes are tfjs's own (`Conv3D`, `Conv3DBackpropInputV2`,
 * `Conv3DBackpropFilterV2`, `Conv2D`, `Conv2DBackpropInput`, `Conv2DBackpropFilter`,
 * `UnsortedSegmentSum`), so registering the configs replaces the stock kernels and every op
 * and gradient built on them (`tf.conv3d`, `tf.conv2d`, their gradients,
 * `tf.conv3dTranspose`, `tf.conv2dTranspose`, the gradient of `tf.gather`) runs here. On
 * wasm this replaces tfjs's single-threaded XNNPACK Conv2D (ours used 16–37 % less CPU per
 * call on 2D U-Net layers at one thread, and runs on every kernel thread) and its scalar-loop
 * Conv2DBackpropInput. Cases the WebAssembly code does not cover (channels-first
 * data, non-float32 segment sums) run the kernel that was registered before
 * `createConvKernels` was called.
 */
import { tf } from '@regkit/core';
import { type BackendLike, isWasmBackend, makeWasmOutput, size } from './backend_io.js';
import { configWithFallback, type Impl } from './fallback.js';
import { Arena, kernelThreads, runThreaded, wasmKernels } from './loader.js';
import { type KernelCall, splitRange } from './threads.js';

/** The functions of `csrc/conv.c` (exports of the kernels' module; P: int32 params, see below). */
export interface ConvExports {
  memory: WebAssembly.Memory;
  conv_units(params: number, op: number): number;
  conv_partial_floats(params: number): number;
  conv_chunks(params: number): number;
  conv_shared_bytes(params: number, op: number): number;
  conv_thread_bytes(params: number, op: number): number;
  conv_prepare(w: number, params: number, op: number, shared: number): void;
  conv_gather(
    src: number,
    shared: number,
    out: number,
    params: number,
    op: number,
    scratch: number,
    u0: number,
    u1: number,
  ): void;
  conv_filter_chunks(
    x: number,
    dy: number,
    params: number,
    shared: number,
    scratch: number,
    k0: number,
    k1: number,
  ): void;
  conv_filter_reduce(shared: number, chunks: number, count: number, e0: number, e1: number): void;
  conv_filter_finish(shared: number, dw: number, params: number): void;
  unsorted_segment_sum(
    x: number,
    ids: number,
    out: number,
    n: number,
    inner: number,
    numSegments: number,
  ): void;
}

/** Readable slack after inputs, in floats (the filter gradient reads dy as whole vectors). */
const SLACK_FLOATS = 4;
/** Fewest multiply-adds per thread: smaller calls use fewer threads (a start costs ~20 µs). */
const MIN_MACS_PER_THREAD = 1 << 20;

/** Operation codes of `csrc/conv.c`. */
const OP_FWD = 0;
const OP_BWD_INPUT = 1;
const OP_BWD_FILTER = 2;

/**
 * Geometry passed to the C code: [B, D, H, W, Ci, KD, KH, KW, Co, Do, Ho, Wo,
 * sd, sh, sw, pf, pt, pl, dd, dh, dw] (x, filter and y sizes; strides; front/top/left
 * padding; dilations).
 */
type ConvParams = number[];

function conv3dParams(info: tf.backend_util.Conv3DInfo): ConvParams {
  return [
    info.batchSize,
    info.inDepth,
    info.inHeight,
    info.inWidth,
    info.inChannels,
    info.filterDepth,
    info.filterHeight,
    info.filterWidth,
    info.outChannels,
    info.outDepth,
    info.outHeight,
    info.outWidth,
    info.strideDepth,
    info.strideHeight,
    info.strideWidth,
    info.padInfo.front,
    info.padInfo.top,
    info.padInfo.left,
    info.dilationDepth,
    info.dilationHeight,
    info.dilationWidth,
  ];
}

function conv2dParams(info: tf.backend_util.Conv2DInfo): ConvParams {
  return [
    info.batchSize,
    1,
    info.inHeight,
    info.inWidth,
    info.inChannels,
    1,
    info.filterHeight,
    info.filterWidth,
    info.outChannels,
    1,
    info.outHeight,
    info.outWidth,
    1,
    info.strideHeight,
    info.strideWidth,
    0,
    info.padInfo.top,
    info.padInfo.left,
    1,
    info.dilationHeight,
    info.dilationWidth,
  ];
}

/** tfjs's 2D geometry (channels last) of x `[B, H, W, Ci]` and a filter `[kh, kw, Ci, Co]`. */
function conv2dInfo(
  xShape: readonly number[],
  filterShape: readonly number[],
  attrs: { strides: number | [number, number]; pad: unknown; dimRoundingMode?: unknown },
  dilations: number | [number, number] = 1,
): tf.backend_util.Conv2DInfo {
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides,
    dilations,
    attrs.pad as Parameters<typeof tf.backend_util.computeConv2DInfo>[4],
    attrs.dimRoundingMode as 'floor' | 'round' | 'ceil' | undefined,
    false,
    'channelsLast',
  );
}

/** An input of a call: a tensor of the backend (float32 or int32), copied in before the call. */
interface CallInput {
  tensor: tf.TensorInfo;
  dtype: 'float32' | 'int32';
}

/**
 * Runs one computation in the kernels' memory: allocates params (int32), the inputs (with
 * slack), a float32 output of `outShape`, copies the inputs in, calls `compute(ptrs, arena)`
 * with [params, ...inputs, output] byte offsets (it may allocate more from `arena`) and
 * returns the output as a tensor of `backend`. The arena is reset by the next call.
 */
function runConv(
  backend: BackendLike,
  params: number[],
  inputs: CallInput[],
  outShape: number[],
  compute: (ptrs: number[], arena: Arena) => void,
): tf.TensorInfo {
  const outSize = size(outShape);
  const wasm = wasmKernels();
  const arena = new Arena(wasm);
  const pParams = arena.alloc(Math.max(1, params.length));
  const pInputs = inputs.map((i) => arena.alloc(size(i.tensor.shape) + SLACK_FLOATS));
  const pOut = arena.alloc(outSize);
  const wasmBackend = isWasmBackend(backend);
  // wasm backend: allocate the output first, since growing tfjs's heap detaches its views
  const outInfo = wasmBackend ? makeWasmOutput(backend, outShape) : null;
  // views on the kernels' memory only now: every alloc above may have grown it
  arena.i32(pParams, params.length).set(params);
  inputs.forEach((input, i) => {
    const values = (
      wasmBackend
        ? backend.typedArrayFromHeap!(input.tensor)
        : backend.readSync(input.tensor.dataId)
    ) as tf.TypedArray;
    const n = values.length;
    if (input.dtype === 'int32') arena.i32(pInputs[i]!, n).set(values as Int32Array);
    else arena.f32(pInputs[i]!, n).set(values as Float32Array);
    arena.f32(pInputs[i]! + 4 * n, SLACK_FLOATS).fill(0);
  });
  compute([pParams, ...pInputs, pOut], arena);
  const result = arena.f32(pOut, outSize);
  if (outInfo) {
    (backend.typedArrayFromHeap!(outInfo) as Float32Array).set(result);
    return outInfo;
  }
  if (!backend.makeTensorInfo) {
    throw new Error('@regkit/kernels: this backend cannot create tensors from values');
  }
  return backend.makeTensorInfo(outShape, 'float32', result.slice());
}

/** Multiply-adds of a convolution (its forward; each gradient costs the same). */
function macs(P: ConvParams): number {
  const [B, , , , Ci, KD, KH, KW, Co, Do, Ho, Wo] = P as number[];
  return B! * Do! * Ho! * Wo! * Co! * Ci! * KD! * KH! * KW!;
}

/** Threads for `units` of work costing `total` multiply-adds: at most {@link kernelThreads}. */
function threadsForConv(units: number, total: number): number {
  return Math.max(1, Math.min(kernelThreads(), units, Math.floor(total / MIN_MACS_PER_THREAD)));
}

/**
 * Forward (op 0: src x, w → y) or input gradient (op 1: src dy, w → dx): the filter is
 * prepared once on this thread, then the output units are split over the threads.
 */
function gatherOp(
  backend: BackendLike,
  P: ConvParams,
  op: number,
  src: tf.TensorInfo,
  filter: tf.TensorInfo,
  outShape: number[],
): tf.TensorInfo {
  const E = wasmKernels() as unknown as ConvExports;
  return runConv(
    backend,
    P,
    [
      { tensor: src, dtype: 'float32' },
      { tensor: filter, dtype: 'float32' },
    ],
    outShape,
    ([p, sp, wp, op_], arena) => {
      const units = E.conv_units(p!, op);
      const threads = threadsForConv(units, macs(P));
      const shared = arena.alloc(Math.ceil(E.conv_shared_bytes(p!, op) / 4));
      const perThread = Math.ceil(E.conv_thread_bytes(p!, op) / 4);
      const scratch = Array.from({ length: threads }, () => arena.alloc(perThread));
      E.conv_prepare(wp!, p!, op, shared);
      const calls: KernelCall[] = splitRange(units, threads).map(([u0, u1], t) => ({
        fn: 'conv_gather',
        args: [sp!, shared, op_!, p!, op, scratch[t]!, u0, u1],
      }));
      runThreaded(calls);
    },
  );
}

/**
 * Filter gradient (x, dy → dw [KD, KH, KW, Ci, Co]): fixed chunks (conv_chunks: from the
 * shapes only) summed into partials on the threads, the partials added in chunk order on
 * the threads (element ranges), then unpacked or transformed into dw on this thread.
 */
function filterOp(
  backend: BackendLike,
  P: ConvParams,
  x: tf.TensorInfo,
  dy: tf.TensorInfo,
  filterShape: number[],
): tf.TensorInfo {
  const E = wasmKernels() as unknown as ConvExports;
  return runConv(
    backend,
    P,
    [
      { tensor: x, dtype: 'float32' },
      { tensor: dy, dtype: 'float32' },
    ],
    filterShape,
    ([p, xp, dyp, dwp], arena) => {
      const chunks = E.conv_chunks(p!);
      const count = E.conv_partial_floats(p!);
      const threads = threadsForConv(chunks, macs(P));
      const shared = arena.alloc(Math.ceil(E.conv_shared_bytes(p!, OP_BWD_FILTER) / 4));
      const perThread = Math.ceil(E.conv_thread_bytes(p!, OP_BWD_FILTER) / 4);
      const scratch = Array.from({ length: threads }, () => arena.alloc(perThread));
      runThreaded(
        splitRange(chunks, threads).map(([k0, k1], t) => ({
          fn: 'conv_filter_chunks',
          args: [xp!, dyp!, p!, shared, scratch[t]!, k0, k1],
        })),
      );
      if (chunks > 1) {
        const reduceThreads = Math.max(1, Math.min(threads, Math.floor((count * chunks) / 65536)));
        runThreaded(
          splitRange(count, reduceThreads, 4).map(([e0, e1]) => ({
            fn: 'conv_filter_reduce',
            args: [shared, chunks, count, e0, e1],
          })),
        );
      }
      E.conv_filter_finish(shared, dwp!, p!);
    },
  );
}

/** A zero-filled float32 tensor of the backend (empty inputs). */
function zeros(backend: BackendLike, shape: number[]): tf.TensorInfo {
  if (isWasmBackend(backend)) {
    const info = makeWasmOutput(backend, shape);
    (backend.typedArrayFromHeap!(info) as Float32Array).fill(0);
    return info;
  }
  return backend.makeTensorInfo!(shape, 'float32', new Float32Array(size(shape)));
}

/** Kernel names provided by {@link createConvKernels}. */
export const CONV_KERNEL_NAMES = [
  'Conv3D',
  'Conv3DBackpropInputV2',
  'Conv3DBackpropFilterV2',
  'Conv2D',
  'Conv2DBackpropInput',
  'Conv2DBackpropFilter',
  'UnsortedSegmentSum',
] as const;

/** Backends the kernel configs are made for. */
export const CONV_BACKENDS = ['cpu', 'wasm'] as const;

/**
 * Kernel configs running `csrc/conv.c` for `Conv3D`, `Conv3DBackpropInputV2`,
 * `Conv3DBackpropFilterV2`, `Conv2D`, `Conv2DBackpropInput`, `Conv2DBackpropFilter` and `UnsortedSegmentSum` on the
 * `cpu` and `wasm` backends. Register them with `replaceKernel` (from `@regkit/core`).
 * The kernels registered under these names at the time of the call are kept as fallbacks
 * for the cases the WebAssembly code does not handle.
 *
 * @example
 * ```ts
 * import { replaceKernel } from '@regkit/core';
 * await initKernels();
 * for (const config of createConvKernels()) replaceKernel(config);
 * ```
 */
export function createConvKernels(): tf.KernelConfig[] {
  const conv3d: Impl = ({ inputs, backend, attrs }, fallback) => {
    const { x, filter } = inputs as { x: tf.TensorInfo; filter: tf.TensorInfo };
    const { strides, pad, dilations, dataFormat } = attrs as unknown as tf.Conv3DAttrs;
    if (dataFormat === 'NCDHW') return fallback();
    const info = tf.backend_util.computeConv3DInfo(
      x.shape as [number, number, number, number, number],
      filter.shape as [number, number, number, number, number],
      strides,
      dilations ?? 1,
      pad,
    );
    const b = backend as BackendLike;
    if (size(x.shape) === 0 || size(filter.shape) === 0 || size(info.outShape) === 0)
      return zeros(b, info.outShape);
    return gatherOp(b, conv3dParams(info), OP_FWD, x, filter, info.outShape);
  };

  const conv3dBackpropInput: Impl = ({ inputs, backend, attrs }) => {
    const { dy, filter } = inputs as { dy: tf.TensorInfo; filter: tf.TensorInfo };
    const { strides, pad, inputShape } = attrs as unknown as tf.Conv3DBackpropInputV2Attrs;
    const info = tf.backend_util.computeConv3DInfo(
      inputShape,
      filter.shape as [number, number, number, number, number],
      strides,
      1,
      pad,
    );
    const b = backend as BackendLike;
    if (size(dy.shape) === 0 || size(filter.shape) === 0 || size(info.inShape) === 0)
      return zeros(b, [...info.inShape]);
    return gatherOp(b, conv3dParams(info), OP_BWD_INPUT, dy, filter, [...info.inShape]);
  };

  const conv3dBackpropFilter: Impl = ({ inputs, backend, attrs }) => {
    const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
    const { strides, pad, filterShape } = attrs as unknown as tf.Conv3DBackpropFilterV2Attrs;
    const info = tf.backend_util.computeConv3DInfo(
      x.shape as [number, number, number, number, number],
      filterShape,
      strides,
      1,
      pad,
    );
    const b = backend as BackendLike;
    if (size(x.shape) === 0 || size(dy.shape) === 0 || size(filterShape) === 0)
      return zeros(b, [...filterShape]);
    return filterOp(b, conv3dParams(info), x, dy, [...filterShape]);
  };

  const conv2d: Impl = ({ inputs, backend, attrs }, fallback) => {
    const { x, filter } = inputs as { x: tf.TensorInfo; filter: tf.TensorInfo };
    const a = attrs as unknown as tf.Conv2DAttrs;
    if (a.dataFormat === 'NCHW') return fallback();
    const info = conv2dInfo(x.shape, filter.shape, a, a.dilations ?? 1);
    const b = backend as BackendLike;
    if (size(x.shape) === 0 || size(filter.shape) === 0 || size(info.outShape) === 0)
      return zeros(b, info.outShape);
    return gatherOp(b, conv2dParams(info), OP_FWD, x, filter, info.outShape);
  };

  const conv2dBackpropInput: Impl = ({ inputs, backend, attrs }, fallback) => {
    const { dy, filter } = inputs as { dy: tf.TensorInfo; filter: tf.TensorInfo };
    const a = attrs as unknown as tf.Conv2DBackpropInputAttrs;
    if (a.dataFormat === 'NCHW') return fallback();
    const info = conv2dInfo(a.inputShape, filter.shape, a);
    const b = backend as BackendLike;
    if (size(dy.shape) === 0 || size(filter.shape) === 0 || size(info.inShape) === 0)
      return zeros(b, [...info.inShape]);
    return gatherOp(b, conv2dParams(info), OP_BWD_INPUT, dy, filter, [...info.inShape]);
  };

  const conv2dBackpropFilter: Impl = ({ inputs, backend, attrs }, fallback) => {
    const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
    const a = attrs as unknown as tf.Conv2DBackpropFilterAttrs;
    if (a.dataFormat === 'NCHW') return fallback();
    const info = conv2dInfo(x.shape, a.filterShape, a);
    const b = backend as BackendLike;
    if (size(x.shape) === 0 || size(dy.shape) === 0 || size(a.filterShape) === 0)
      return zeros(b, [...a.filterShape]);
    return filterOp(b, conv2dParams(info), x, dy, [...a.filterShape]);
  };

  const unsortedSegmentSum: Impl = ({ inputs, backend, attrs }, fallback) => {
    const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
    const { numSegments } = attrs as unknown as tf.UnsortedSegmentSumAttrs;
    if (x.dtype !== 'float32' || segmentIds.dtype !== 'int32') {
      return fallback();
    }
    const n = size(segmentIds.shape);
    const innerShape = x.shape.slice(segmentIds.shape.length);
    const inner = size(innerShape);
    const outShape = [numSegments, ...innerShape];
    const b = backend as BackendLike;
    if (n === 0 || inner === 0 || numSegments === 0) return zeros(b, outShape);
    const E = wasmKernels() as unknown as ConvExports;
    return runConv(
      b,
      [],
      [
        { tensor: x, dtype: 'float32' },
        { tensor: segmentIds, dtype: 'int32' },
      ],
      outShape,
      ([, xp, idp, op]) => E.unsorted_segment_sum(xp!, idp!, op!, n, inner, numSegments),
    );
  };

  const impls: Record<(typeof CONV_KERNEL_NAMES)[number], Impl> = {
    Conv3D: conv3d,
    Conv3DBackpropInputV2: conv3dBackpropInput,
    Conv3DBackpropFilterV2: conv3dBackpropFilter,
    Conv2D: conv2d,
    Conv2DBackpropInput: conv2dBackpropInput,
    Conv2DBackpropFilter: conv2dBackpropFilter,
    UnsortedSegmentSum: unsortedSegmentSum,
  };

  const configs: tf.KernelConfig[] = [];
  for (const backendName of CONV_BACKENDS) {
    for (const kernelName of CONV_KERNEL_NAMES) {
      configs.push(configWithFallback(kernelName, backendName, impls[kernelName]));
    }
  }
  return configs;
}
