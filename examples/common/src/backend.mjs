/**
 * Backend set-up shared by the example apps: `initBackend` (tensorflow > wasm > cpu, or the
 * one named) with the WebAssembly-SIMD kernels of `@regkit/kernels`, handed to core
 * explicitly (core cannot resolve them by name from inside a workspace).
 */
import { initBackend } from '@regkit/core';
import * as kernels from '@regkit/kernels';

/** Initialises the backend (`name` or the best available) and the kernels; returns its name. */
export async function initExampleBackend(name) {
  return initBackend(name, { kernels });
}
