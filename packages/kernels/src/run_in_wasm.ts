/** Running one computation of `warp.wasm` (warp, resize, local NCC) on tensors of a tfjs backend. */
import type { tf } from '@regkit/core';
import { type BackendLike, isWasmBackend, makeWasmOutput, size } from './backend_io.js';
import { Arena, kernelThreads, wasmKernels } from './loader.js';

/**
 * Runs one computation in the kernels' memory: allocates `inputs`, float32 outputs of
 * `outShapes` and float32 scratch buffers of `scratch` values there, copies the inputs in,
 * calls `compute` with the byte offsets (inputs, outputs, then scratch) and the arena (for
 * buffers allocated during the computation), and returns the
 * outputs as tensors of `backend`. With `readOnlyInputs`, an input passed twice (the same
 * tensor data, e.g. `warp(u, u)` in scaling and squaring) is copied in once and both get its
 * offset: only for computations that never write into their inputs.
 */
export function runInWasm(
  backend: BackendLike,
  inputs: tf.TensorInfo[],
  outShapes: number[][],
  compute: (ptrs: number[], arena: Arena) => void,
  scratch: number[] = [],
  readOnlyInputs = false,
): tf.TensorInfo[] {
  const wasm = wasmKernels();
  const arena = new Arena(wasm);
  // index of the first input with the same data (itself unless shared)
  const first = inputs.map((t, i) =>
    readOnlyInputs ? inputs.findIndex((u) => u.dataId === t.dataId) : i,
  );
  const inPtrs: number[] = [];
  inputs.forEach((t, i) => {
    inPtrs.push(first[i] === i ? arena.alloc(size(t.shape)) : inPtrs[first[i]!]!);
  });
  const outPtrs = outShapes.map((s) => arena.alloc(size(s)));
  const scratchPtrs = scratch.map((n) => arena.alloc(n));
  const wasmBackend = isWasmBackend(backend);
  // wasm backend: allocate the outputs first, since growing tfjs's heap detaches its views
  const outInfos = wasmBackend ? outShapes.map((s) => makeWasmOutput(backend, s)) : [];
  const read = (t: tf.TensorInfo) =>
    (wasmBackend ? backend.typedArrayFromHeap!(t) : backend.readSync(t.dataId)) as tf.TypedArray;
  // views on this module's memory only now: every alloc above may have grown it
  inputs.forEach((t, i) => {
    if (first[i] === i) arena.f32(inPtrs[i]!, size(t.shape)).set(read(t));
  });
  compute([...inPtrs, ...outPtrs, ...scratchPtrs], arena);
  return outShapes.map((s, i) => {
    const values = arena.f32(outPtrs[i]!, size(s));
    if (wasmBackend) {
      (backend.typedArrayFromHeap!(outInfos[i]!) as Float32Array).set(values);
      return outInfos[i]!;
    }
    if (!backend.makeTensorInfo) {
      throw new Error('@regkit/kernels: this backend cannot create tensors from values');
    }
    return backend.makeTensorInfo(s, 'float32', values.slice());
  });
}

/** Fewest output values per thread: smaller calls use fewer threads (the start-up costs ~20 µs). */
const MIN_VALUES_PER_THREAD = 32768;

/** Threads for a call computing `values` outputs: at most {@link kernelThreads}. */
export function threadsFor(values: number): number {
  return Math.max(1, Math.min(kernelThreads(), Math.floor(values / MIN_VALUES_PER_THREAD)));
}
