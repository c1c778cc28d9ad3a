/**
 * Reading inputs and writing outputs of JavaScript kernels on the `cpu` and `wasm`
 * backends without extra copies (wasm: views on its heap).
 */
import { tf } from './tf.js';

/** The parts of the cpu and wasm backend classes the kernels use. */
export type KernelBackendLike = tf.KernelBackend & {
  /** wasm: allocate on the heap (and copy `values` when given). cpu has a `makeOutput` of another signature. */
  makeOutput?: (
    shape: number[],
    dtype: tf.DataType,
    offset?: number,
    values?: tf.TypedArray,
  ) => tf.TensorInfo;
  /** wasm only: a view on the heap memory of a tensor. */
  typedArrayFromHeap?: (t: tf.TensorInfo) => tf.TypedArray;
  /** cpu: a tensor from values (kept by reference). */
  makeTensorInfo?: (shape: number[], dtype: tf.DataType, values?: tf.TypedArray) => tf.TensorInfo;
};

/** True for the tfjs wasm backend. */
export function isWasmBackend(backend: KernelBackendLike): boolean {
  return (
    typeof backend.typedArrayFromHeap === 'function' && typeof backend.makeOutput === 'function'
  );
}

/**
 * A float32 or int32 tensor allocated on the tfjs wasm heap. Its malloc returns 0 when the
 * heap (at most 4 GiB) is exhausted and `makeOutput` does not check: writing there would
 * corrupt the heap, so this throws instead.
 */
export function makeWasmOutput(
  backend: KernelBackendLike,
  shape: number[],
  dtype: tf.DataType = 'float32',
  values?: tf.TypedArray,
): tf.TensorInfo {
  const info = backend.makeOutput!(shape, dtype, undefined, values);
  if (shape.reduce((a, b) => a * b, 1) > 0 && backend.typedArrayFromHeap!(info).byteOffset === 0) {
    backend.disposeData(info.dataId);
    throw new Error(
      `regkit: the tfjs wasm backend could not allocate a ${dtype} tensor of shape [${shape.join(', ')}] (its WebAssembly heap holds at most 4 GiB)`,
    );
  }
  return info;
}

/** A tensor from values on either backend (copied to the heap on wasm). */
export function makeOutput(
  backend: KernelBackendLike,
  shape: number[],
  dtype: tf.DataType,
  values: tf.TypedArray,
): tf.TensorInfo {
  if (isWasmBackend(backend)) return makeWasmOutput(backend, shape, dtype, values);
  if (backend.makeTensorInfo) return backend.makeTensorInfo(shape, dtype, values);
  throw new Error('regkit: this backend cannot create tensors from values');
}

/**
 * Allocates zero-filled float32 outputs, then gives views on the inputs: on wasm the
 * views are taken after every allocation, since growing the heap detaches older views.
 */
export function runFloatKernel(
  backend: KernelBackendLike,
  inputs: tf.TensorInfo[],
  outShapes: number[][],
  compute: (inputs: Float32Array[], outputs: Float32Array[]) => void,
): tf.TensorInfo[] {
  const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
  if (isWasmBackend(backend)) {
    const infos = outShapes.map((s) => makeWasmOutput(backend, s));
    const outs = infos.map((i) => backend.typedArrayFromHeap!(i) as Float32Array);
    for (const o of outs) o.fill(0);
    const ins = inputs.map((t) => backend.typedArrayFromHeap!(t) as Float32Array);
    compute(ins, outs);
    return infos;
  }
  const outs = outShapes.map((s) => new Float32Array(size(s)));
  const ins = inputs.map((t) => backend.readSync(t.dataId) as Float32Array);
  compute(ins, outs);
  return outs.map((o, i) => makeOutput(backend, outShapes[i]!, 'float32', o));
}

/**
 * Calls `read` with the values of `t` without copying them where the backend allows: on
 * wasm a view on its heap, on cpu its stored array (`dataSync()` elsewhere, a copy). The
 * values are valid only during the call and must not be modified: `read` must be synchronous
 * and must not run tfjs ops (a heap growth would detach the view). Saves a copy of a large
 * tensor when encoding it (e.g. a 3D field written to a file).
 * @param t any float32/int32/bool tensor.
 * @returns what `read` returns.
 */
export function withValues<T>(t: tf.Tensor, read: (values: tf.TypedArray) => T): T {
  const info = (
    tf.engine().state as unknown as {
      tensorInfo: WeakMap<object, { backend: KernelBackendLike } | undefined>;
    }
  ).tensorInfo.get(t.dataId);
  const wasm = info?.backend as
    | (KernelBackendLike & { dataIdMap?: { has(id: object): boolean } })
    | undefined;
  if (
    wasm &&
    isWasmBackend(wasm) &&
    t.dtype !== 'string' &&
    t.size > 0 &&
    wasm.dataIdMap?.has(t.dataId) === true
  ) {
    return read(wasm.typedArrayFromHeap!({ dataId: t.dataId, shape: t.shape, dtype: t.dtype }));
  }
  return read(t.dataSync() as tf.TypedArray);
}
