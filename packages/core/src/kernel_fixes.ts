/**
 * Kernel fixes for the stock tfjs `cpu` and `wasm` backends, registered on import.
 *
 * - `wasm` lacks several kernels the `cpu` backend has (Conv2DBackpropFilter,
 *   DepthwiseConv2dNativeBackprop*, Einsum, UnsortedSegmentSum, ...): each is
 *   registered for `wasm` as a delegate that copies the inputs to the cpu
 *   backend, runs the cpu kernel and copies the result back (correct, not fast).
 * - wasm `Conv3DBackpropInputV2` is wrong (only the first depth slices are
 *   filled) and wasm `Conv3DBackpropFilterV2` is wrong for stride 2 (found by
 *   test/backend.test.ts): both replaced by the cpu delegate.
 * - `UnsortedSegmentSum` (the gradient of `tf.gather`) is quadratic on cpu
 *   (one mask per segment): replaced on both backends by a linear-time loop.
 * - `Slice` copies element by element through `tf.buffer` above rank 4 on both backends
 *   (and on cpu for any non-contiguous slice), and row by row on wasm up to rank 4 (slow
 *   for a short last axis): a slice of a 3D field took up to half a second. Replaced on
 *   both by `fast_slice.ts` (merges axes taken whole, copies contiguous runs).
 *
 * - wasm `Identity` (run by `tf.clone` and by the engine for every tensor a gradient saves)
 *   copies the data; tensors are immutable, so it is replaced by the cpu backend's form: the
 *   output shares the input's data (reference-counted, like wasm's own `Reshape`). This
 *   halves the memory a backward pass holds on wasm.
 *
 * `@regkit/kernels` later replaces these with fast WebAssembly-SIMD kernels.
 */
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import { type KernelBackendLike, makeOutput } from './backend_io.js';
import { fastSliceKernel, fastSplitKernel } from './fast_slice.js';
import { tf } from './tf.js';

type KernelFunc = tf.KernelConfig['kernelFunc'];

/** Kernels never delegated (complex numbers and canvas drawing do not exist on wasm). */
const NOT_DELEGATED = new Set(['Complex', 'ComplexAbs', 'FFT', 'IFFT', 'Real', 'Imag', 'Draw']);

/** Kernels replaced by JavaScript on both backends (never delegated to cpu). */
const REPLACED_ON_BOTH = new Set(['Slice', 'SplitV', 'UnsortedSegmentSum']);

/** Kernel names whose stock wasm implementation is wrong and is replaced by the cpu delegate. */
export const WASM_KERNELS_REPLACED = ['Conv3DBackpropInputV2', 'Conv3DBackpropFilterV2'] as const;

/** Registers a kernel, replacing any registered under the same name and backend. */
export function replaceKernel(config: tf.KernelConfig): void {
  if (tf.getKernel(config.kernelName, config.backendName)) {
    tf.unregisterKernel(config.kernelName, config.backendName);
  }
  tf.registerKernel(config);
}

function cpuDelegate(kernelName: string): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const cpu = tf.findBackend('cpu') as KernelBackendLike | null;
    const kernel = tf.getKernel(kernelName, 'cpu');
    if (!cpu || !kernel)
      throw new Error(`regkit: the cpu backend is needed to run ${kernelName} on wasm`);
    const src = backend as KernelBackendLike;
    const cpuInputs: Record<string, tf.TensorInfo> = {};
    for (const [name, t] of Object.entries(inputs)) {
      if (!t) continue;
      const values = src.readSync(t.dataId) as tf.TypedArray;
      cpuInputs[name] = makeOutput(cpu, [...t.shape], t.dtype, values);
    }
    try {
      const result = kernel.kernelFunc({ inputs: cpuInputs, backend: cpu, attrs });
      const outs = Array.isArray(result) ? result : [result];
      const copied = outs.map((o) => {
        const values = cpu.readSync(o.dataId) as tf.TypedArray;
        const r = makeOutput(src, [...o.shape], o.dtype, values.slice());
        cpu.disposeData(o.dataId);
        return r;
      });
      return Array.isArray(result) ? copied : copied[0]!;
    } finally {
      for (const t of Object.values(cpuInputs)) cpu.disposeData(t.dataId);
    }
  };
}

/** Linear-time UnsortedSegmentSum: out[s, ...] = Σ_{i: ids[i] = s} x[i, ...]; ids outside [0, n) are dropped. */
const unsortedSegmentSum: KernelFunc = ({ inputs, backend, attrs }) => {
  const b = backend as KernelBackendLike;
  const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const numSegments = (attrs as unknown as { numSegments: number }).numSegments;
  const xv = b.readSync(x.dataId) as Float32Array | Int32Array;
  const ids = b.readSync(segmentIds.dataId) as Int32Array | Float32Array;
  const inner = ids.length === 0 ? 0 : xv.length / ids.length;
  const outShape = [numSegments, ...x.shape.slice(segmentIds.shape.length)];
  const out =
    x.dtype === 'int32'
      ? new Int32Array(numSegments * inner)
      : new Float32Array(numSegments * inner);
  for (let i = 0; i < ids.length; i++) {
    const s = ids[i]!;
    if (s < 0 || s >= numSegments) continue;
    const o = s * inner;
    const xi = i * inner;
    for (let j = 0; j < inner; j++) out[o + j]! += xv[xi + j]!;
  }
  return makeOutput(b, outShape, x.dtype, out);
};

/** Identity without a copy: the output shares the input's (reference-counted) data. */
function sharedIdentity(stock: KernelFunc | undefined): KernelFunc {
  return (args) => {
    const x = (args.inputs as { x: tf.TensorInfo }).x;
    const b = args.backend as { incRef?: (dataId: object) => void };
    if (x.dtype === 'string' || typeof b.incRef !== 'function') {
      if (!stock) throw new Error('regkit: no Identity kernel to fall back on');
      return stock(args);
    }
    b.incRef(x.dataId);
    return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
  };
}

let installed = false;

/** The kernel functions registered when core was imported, by `backend/kernel`. */
const initialKernels = new Map<string, KernelFunc>();

/**
 * True when `kernelName` on `backendName` is still the kernel registered when `@regkit/core`
 * was imported (the stock tfjs one or core's cpu delegate), i.e. nobody (such as
 * `@regkit/kernels`) has replaced it since. Ops use this to route around slow stock kernels.
 */
export function isInitialKernel(kernelName: string, backendName: string): boolean {
  const initial = initialKernels.get(`${backendName}/${kernelName}`);
  return initial !== undefined && tf.getKernel(kernelName, backendName)?.kernelFunc === initial;
}

/** Registers the fixes above (idempotent; runs on import of `@regkit/core`). */
export function registerKernelFixes(): void {
  if (installed) return;
  installed = true;
  for (const backendName of ['cpu', 'wasm']) {
    const stockSlice = tf.getKernel('Slice', backendName)?.kernelFunc;
    const fastSlice = fastSliceKernel(stockSlice);
    replaceKernel({ kernelName: 'Slice', backendName, kernelFunc: fastSlice });
    replaceKernel({ kernelName: 'SplitV', backendName, kernelFunc: fastSplitKernel(fastSlice) });
    replaceKernel({
      kernelName: 'UnsortedSegmentSum',
      backendName,
      kernelFunc: unsortedSegmentSum,
    });
  }
  replaceKernel({
    kernelName: 'Identity',
    backendName: 'wasm',
    kernelFunc: sharedIdentity(tf.getKernel('Identity', 'wasm')?.kernelFunc),
  });
  for (const { kernelName } of tf.getKernelsForBackend('cpu')) {
    if (NOT_DELEGATED.has(kernelName) || REPLACED_ON_BOTH.has(kernelName)) continue;
    const replace = (WASM_KERNELS_REPLACED as readonly string[]).includes(kernelName);
    if (replace || !tf.getKernel(kernelName, 'wasm')) {
      replaceKernel({ kernelName, backendName: 'wasm', kernelFunc: cpuDelegate(kernelName) });
    }
  }
  for (const backendName of ['cpu', 'wasm']) {
    for (const { kernelName, kernelFunc } of tf.getKernelsForBackend(backendName)) {
      initialKernels.set(`${backendName}/${kernelName}`, kernelFunc);
    }
  }
}

registerKernelFixes();
