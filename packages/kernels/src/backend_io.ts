/** Access to tensors of the tfjs cpu and wasm backends, shared by every kernel of this package. */
import type { tf } from '@regkit/core';

/** The parts of the tfjs cpu and wasm backend classes the kernels use. */
export type BackendLike = tf.KernelBackend & {
  /** wasm: a new tensor on its heap (cpu has a `makeOutput` of another signature). */
  makeOutput?: (shape: number[], dtype: tf.DataType) => tf.TensorInfo;
  /** wasm only: a view on the heap memory of a tensor. */
  typedArrayFromHeap?: (t: tf.TensorInfo) => tf.TypedArray;
  /** cpu: a tensor that keeps `values` by reference. */
  makeTensorInfo?: (shape: number[], dtype: tf.DataType, values?: tf.TypedArray) => tf.TensorInfo;
};

/** True for the tfjs wasm backend. */
export function isWasmBackend(b: BackendLike): boolean {
  return typeof b.typedArrayFromHeap === 'function' && typeof b.makeOutput === 'function';
}

/** Number of elements of a shape. */
export const size = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/**
 * A float32 tensor on the tfjs wasm heap. Its malloc returns 0 when the heap (at most
 * 4 GiB) is exhausted and makeOutput does not check: writing there would corrupt the heap.
 */
export function makeWasmOutput(backend: BackendLike, shape: number[]): tf.TensorInfo {
  const info = backend.makeOutput!(shape, 'float32');
  if (size(shape) > 0 && backend.typedArrayFromHeap!(info).byteOffset === 0) {
    backend.disposeData(info.dataId);
    throw new Error(
      `@regkit/kernels: the tfjs wasm backend could not allocate a float32 tensor of shape [${shape.join(', ')}] (its WebAssembly heap holds at most 4 GiB)`,
    );
  }
  return info;
}
