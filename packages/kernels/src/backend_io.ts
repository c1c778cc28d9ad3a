/** Access to tensors of the tfjs cpu and wasm backends, shared by every kernel of this package (core's helpers). */
export {
  isWasmBackend,
  type KernelBackendLike as BackendLike,
  makeWasmOutput,
} from '@regkit/core';

/** Number of elements of a shape. */
export const size = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
