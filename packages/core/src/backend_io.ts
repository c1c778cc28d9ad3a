/**
 * Reading inputs and writing outputs of JavaScript kernels on the `cpu` and `wasm`
 * backends without extra copies (wasm: views on its heap).
 */
import type { tf } from './tf.js';

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

/** A tensor from values on either backend (copied to the heap on wasm). */
export function makeOutput(
  backend: KernelBackendLike,
  shape: number[],
  dtype: tf.DataType,
  values: tf.TypedArray,
): tf.TensorInfo {
  if (isWasmBackend(backend)) return backend.makeOutput!(shape, dtype, undefined, values);
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
    const infos = outShapes.map((s) => backend.makeOutput!(s, 'float32'));
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
