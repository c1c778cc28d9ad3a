import { type BackendName, initBackend, tf } from '@regkit/core';
import * as kernels from '@regkit/kernels';
import { UsageError } from './errors.js';

/**
 * Selects the tfjs backend (tensorflow > wasm > cpu unless one is named) and, on cpu and
 * wasm, registers the WebAssembly-SIMD kernels of `@regkit/kernels`. Returns the backend.
 */
export async function setupBackend(name?: string): Promise<string> {
  if (name !== undefined && !['tensorflow', 'wasm', 'cpu'].includes(name)) {
    throw new UsageError(`--backend must be tensorflow, wasm or cpu, got '${name}'`);
  }
  await initBackend(name as BackendName | undefined, { kernels });
  return tf.getBackend();
}
