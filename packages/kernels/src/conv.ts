/**
 * 3D convolution (forward, input gradient, filter gradient), 2D convolution filter
 * gradient and UnsortedSegmentSum kernels for the tfjs `cpu` and `wasm` backends, running
 * `csrc/conv.c` (WebAssembly SIMD, single thread). Inputs are copied into the module's own
 * memory, computed there and copied out into tensors of the calling backend.
 *
 * Kernel names, inputs and attributes are tfjs's own (`Conv3D`, `Conv3DBackpropInputV2`,
 * `Conv3DBackpropFilterV2`, `Conv2DBackpropFilter`, `UnsortedSegmentSum`), so registering
 * the configs replaces the stock kernels and every op and gradient built on them
 * (`tf.conv3d`, its gradients, `tf.conv3dTranspose`, conv2d filter gradients, the gradient
 * of `tf.gather`) runs here. Cases the WebAssembly code does not cover (channels-first
 * data, non-float32 segment sums) run the kernel that was registered before
 * `createConvKernels` was called.
 */
import { tf } from '@regkit/core';
import { type BackendLike, isWasmBackend, makeWasmOutput, size } from './backend_io.js';

/** An instantiated `conv.wasm` with a bump allocator over its exported memory. */
export interface ConvWasm {
  instance: WebAssembly.Instance;
  /** Reserves `bytes` (16-byte aligned, growing the memory as needed); returns the offset. */
  alloc(bytes: number): number;
  /** Frees everything allocated since the last reset. */
  reset(): void;
  /** The module's memory (its buffer changes when the memory grows). */
  memory(): WebAssembly.Memory;
}

/** The functions exported by `csrc/conv.c`. */
export interface ConvExports {
  memory: WebAssembly.Memory;
  heap_base(): number;
  conv_scratch_bytes(params: number, op: number): number;
  conv3d_forward(x: number, w: number, y: number, params: number, scratch: number): void;
  conv3d_backprop_input(dy: number, w: number, dx: number, params: number, scratch: number): void;
  conv3d_backprop_filter(x: number, dy: number, dw: number, params: number, scratch: number): void;
  unsorted_segment_sum(
    x: number,
    ids: number,
    out: number,
    n: number,
    inner: number,
    numSegments: number,
  ): void;
}

const PAGE = 65536;
/** wasm32 memories hold at most 65536 pages (4 GiB). */
const MAX_BYTES = 65536 * PAGE;
/** Readable slack after inputs (the filter gradient reads dy as whole vectors). */
const SLACK = 16;

const align16 = (n: number) => Math.ceil(n / 16) * 16;

/**
 * Instantiates `conv.wasm` (its bytes) with a bump allocator starting at `heap_base()`.
 * Rejects where WebAssembly SIMD is unavailable.
 */
export async function createConvModule(bytes: Uint8Array): Promise<ConvWasm> {
  const { instance } = await WebAssembly.instantiate(bytes as BufferSource, {});
  const exports = instance.exports as unknown as ConvExports;
  const base = align16(exports.heap_base());
  let next = base;
  return {
    instance,
    alloc(n: number): number {
      const ptr = next;
      const end = align16(ptr + n);
      if (end > MAX_BYTES) {
        throw new Error(
          `@regkit/kernels: a convolution needs ${end} bytes, more than WebAssembly's 4 GiB`,
        );
      }
      const memory = exports.memory;
      const have = memory.buffer.byteLength;
      if (end > have) memory.grow(Math.ceil((end - have) / PAGE));
      next = end;
      return ptr;
    },
    reset(): void {
      next = base;
    },
    memory: () => exports.memory,
  };
}

/** Operation codes of `conv_scratch_bytes`. */
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

/** An input of a call: a tensor of the backend (float32 or int32), copied in before the call. */
interface CallInput {
  tensor: tf.TensorInfo;
  dtype: 'float32' | 'int32';
}

/**
 * Runs one computation in the module's memory: allocates params, the inputs, a float32
 * output of `outShape` and `scratchBytes` of scratch (whose size may depend on the params
 * pointer), copies the inputs in, calls `compute(ptrs)` with [params, ...inputs, output,
 * scratch] byte offsets and returns the output as a tensor of `backend`.
 */
function runInWasm(
  wasm: ConvWasm,
  backend: BackendLike,
  params: number[],
  inputs: CallInput[],
  outShape: number[],
  scratchBytes: (paramsPtr: number) => number,
  compute: (ptrs: number[]) => void,
): tf.TensorInfo {
  const outSize = size(outShape);
  wasm.reset();
  try {
    const pParams = wasm.alloc(params.length * 4);
    new Int32Array(wasm.memory().buffer, pParams, params.length).set(params);
    // + SLACK: the filter gradient reads dy as whole vectors (whatever allocator `wasm` has)
    const pInputs = inputs.map((i) => wasm.alloc(size(i.tensor.shape) * 4 + SLACK));
    const pOut = wasm.alloc(outSize * 4);
    const pScratch = wasm.alloc(scratchBytes(pParams));
    const wasmBackend = isWasmBackend(backend);
    // wasm backend: allocate the output first, since growing tfjs's heap detaches its views
    const outInfo = wasmBackend ? makeWasmOutput(backend, outShape) : null;
    // views on the module's memory only now: every alloc above may have grown it
    const buffer = wasm.memory().buffer;
    inputs.forEach((input, i) => {
      const values = (
        wasmBackend
          ? backend.typedArrayFromHeap!(input.tensor)
          : backend.readSync(input.tensor.dataId)
      ) as tf.TypedArray;
      const Ctor = input.dtype === 'int32' ? Int32Array : Float32Array;
      new Ctor(buffer, pInputs[i]!, values.length).set(values as ArrayLike<number>);
    });
    compute([pParams, ...pInputs, pOut, pScratch]);
    const result = new Float32Array(wasm.memory().buffer, pOut, outSize);
    if (outInfo) {
      (backend.typedArrayFromHeap!(outInfo) as Float32Array).set(result);
      return outInfo;
    }
    if (!backend.makeTensorInfo) {
      throw new Error('@regkit/kernels: this backend cannot create tensors from values');
    }
    return backend.makeTensorInfo(outShape, 'float32', result.slice());
  } finally {
    wasm.reset();
  }
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
  'Conv2DBackpropFilter',
  'UnsortedSegmentSum',
] as const;

/** Backends the kernel configs are made for. */
export const CONV_BACKENDS = ['cpu', 'wasm'] as const;

/** The kernel each of our kernel functions falls back to (the one registered before). */
const fallbacks = new WeakMap<tf.KernelFunc, tf.KernelFunc | undefined>();

type KernelResult = tf.TensorInfo | tf.TensorInfo[];
/** A kernel function that may hand over to the previously registered kernel. */
type Impl = (args: Parameters<tf.KernelFunc>[0], fallback: () => KernelResult) => KernelResult;

/**
 * Kernel configs running `conv.wasm` for `Conv3D`, `Conv3DBackpropInputV2`,
 * `Conv3DBackpropFilterV2`, `Conv2DBackpropFilter` and `UnsortedSegmentSum` on the
 * `cpu` and `wasm` backends. Register them with `replaceKernel` (from `@regkit/core`).
 * The kernels registered under these names at the time of the call are kept as fallbacks
 * for the cases the WebAssembly code does not handle.
 *
 * @example
 * ```ts
 * import { replaceKernel } from '@regkit/core';
 * const conv = await createConvModule(convWasmBytes);
 * for (const config of createConvKernels(conv)) replaceKernel(config);
 * ```
 */
export function createConvKernels(wasm: ConvWasm): tf.KernelConfig[] {
  const E = wasm.instance.exports as unknown as ConvExports;

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
    return runInWasm(
      wasm,
      b,
      conv3dParams(info),
      [
        { tensor: x, dtype: 'float32' },
        { tensor: filter, dtype: 'float32' },
      ],
      info.outShape,
      (p) => E.conv_scratch_bytes(p, OP_FWD),
      ([p, xp, wp, yp, sp]) => E.conv3d_forward(xp!, wp!, yp!, p!, sp!),
    );
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
    return runInWasm(
      wasm,
      b,
      conv3dParams(info),
      [
        { tensor: dy, dtype: 'float32' },
        { tensor: filter, dtype: 'float32' },
      ],
      [...info.inShape],
      (p) => E.conv_scratch_bytes(p, OP_BWD_INPUT),
      ([p, dyp, wp, dxp, sp]) => E.conv3d_backprop_input(dyp!, wp!, dxp!, p!, sp!),
    );
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
    return runInWasm(
      wasm,
      b,
      conv3dParams(info),
      [
        { tensor: x, dtype: 'float32' },
        { tensor: dy, dtype: 'float32' },
      ],
      [...filterShape],
      (p) => E.conv_scratch_bytes(p, OP_BWD_FILTER),
      ([p, xp, dyp, dwp, sp]) => E.conv3d_backprop_filter(xp!, dyp!, dwp!, p!, sp!),
    );
  };

  const conv2dBackpropFilter: Impl = ({ inputs, backend, attrs }, fallback) => {
    const { x, dy } = inputs as { x: tf.TensorInfo; dy: tf.TensorInfo };
    const { strides, pad, dataFormat, dimRoundingMode, filterShape } =
      attrs as unknown as tf.Conv2DBackpropFilterAttrs;
    if (dataFormat === 'NCHW') {
      return fallback();
    }
    const info = tf.backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number],
      filterShape,
      strides,
      1,
      pad,
      dimRoundingMode,
      false,
      'channelsLast',
    );
    const b = backend as BackendLike;
    if (size(x.shape) === 0 || size(dy.shape) === 0 || size(filterShape) === 0)
      return zeros(b, [...filterShape]);
    return runInWasm(
      wasm,
      b,
      conv2dParams(info),
      [
        { tensor: x, dtype: 'float32' },
        { tensor: dy, dtype: 'float32' },
      ],
      [...filterShape],
      (p) => E.conv_scratch_bytes(p, OP_BWD_FILTER),
      ([p, xp, dyp, dwp, sp]) => E.conv3d_backprop_filter(xp!, dyp!, dwp!, p!, sp!),
    );
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
    return runInWasm(
      wasm,
      b,
      [],
      [
        { tensor: x, dtype: 'float32' },
        { tensor: segmentIds, dtype: 'int32' },
      ],
      outShape,
      () => 0,
      ([, xp, idp, op]) => E.unsorted_segment_sum(xp!, idp!, op!, n, inner, numSegments),
    );
  };

  const impls: Record<(typeof CONV_KERNEL_NAMES)[number], Impl> = {
    Conv3D: conv3d,
    Conv3DBackpropInputV2: conv3dBackpropInput,
    Conv3DBackpropFilterV2: conv3dBackpropFilter,
    Conv2DBackpropFilter: conv2dBackpropFilter,
    UnsortedSegmentSum: unsortedSegmentSum,
  };

  const configs: tf.KernelConfig[] = [];
  for (const backendName of CONV_BACKENDS) {
    for (const kernelName of CONV_KERNEL_NAMES) {
      // the kernel registered now (or, when it is one of ours, the one it falls back to)
      const registered = tf.getKernel(kernelName, backendName)?.kernelFunc;
      const prev = registered && fallbacks.has(registered) ? fallbacks.get(registered) : registered;
      const impl = impls[kernelName];
      const kernelFunc: tf.KernelFunc = (args) =>
        impl(args, () => {
          if (!prev) {
            throw new Error(
              `@regkit/kernels: ${kernelName} with these attributes is not supported by the WebAssembly kernels, and no other ${backendName} kernel was registered`,
            );
          }
          return prev(args);
        });
      fallbacks.set(kernelFunc, prev);
      configs.push({ kernelName, backendName, kernelFunc });
    }
  }
  return configs;
}
