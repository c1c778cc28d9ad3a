import { fail, RegkitMemoryError, type tf, withWasmHeapFallback } from '@regkit/core';

/** What a trainer does when a step would not fit the wasm backend's 4 GiB heap. */
export type WasmHeapPolicy = 'cpu' | 'error';

/**
 * Runs one training step's gradient computation `fn` under the wasm heap policy: `'cpu'`
 * (default) retries it on the cpu backend after a one-line warning when it throws a
 * `RegkitMemoryError` (see `withWasmHeapFallback` of `@regkit/core`; weights, optimiser
 * state and the pair move with it); `'error'` lets the error through, with the step's size
 * added to its message. `retry` undoes what the failed attempt left (the terms it kept).
 */
export async function stepWithinHeap<T>(
  fn: string,
  policy: WasmHeapPolicy | undefined,
  moving: tf.Tensor,
  compute: () => T,
  retry: () => void,
): Promise<T> {
  if (policy !== undefined && policy !== 'cpu' && policy !== 'error') {
    fail(fn, `'onWasmHeapFull' must be 'cpu' or 'error', got ${JSON.stringify(policy)}`);
  }
  const what = `${fn}(): a training step on [${moving.shape.join(', ')}] images`;
  if (policy === 'error') {
    try {
      return compute();
    } catch (e) {
      if (e instanceof RegkitMemoryError) {
        e.message = `${what} does not fit the wasm heap (onWasmHeapFull: 'error'; the default 'cpu' moves training to the cpu backend): ${e.message}`;
      }
      throw e;
    }
  }
  return withWasmHeapFallback(compute, { what, beforeRetry: retry });
}
