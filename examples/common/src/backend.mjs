/**
 * Backend set-up shared by the example apps: `initBackend` (tensorflow > wasm > cpu, or the
 * one named) plus the WebAssembly-SIMD kernels of `@regkit/kernels`, registered explicitly
 * because core's own optional import cannot resolve them from inside a workspace.
 */
import { initBackend } from '@regkit/core';

/** Initialises the backend (`name` or the best available) and the kernels; returns its name. */
export async function initExampleBackend(name) {
  const backend = await initBackend(name);
  try {
    const kernels = await import('@regkit/kernels');
    await kernels.initKernels();
    kernels.registerKernels();
  } catch {
    // optional: the JavaScript kernels of core are used instead
  }
  return backend;
}
