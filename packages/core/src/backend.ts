import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { RegkitBackendError } from './errors.js';
import './kernel_fixes.js';
import { tf } from './tf.js';
import { guardWasmHeap } from './wasm_heap.js';

/** Backends `initBackend` can select. */
export type BackendName = 'tensorflow' | 'wasm' | 'cpu';

const isNode = typeof process !== 'undefined' && !!process.versions?.node;

/** Imports an optional package by name, hidden from bundlers. */
async function importOptional(name: string): Promise<unknown> {
  return import(/* webpackIgnore: true */ /* @vite-ignore */ name);
}

let wasmPathsSet = false;

async function locateWasmFiles(): Promise<void> {
  if (wasmPathsSet || !isNode) return;
  const { createRequire } = (await importOptional('node:module')) as typeof import('node:module');
  const path = (await importOptional('node:path')) as typeof import('node:path');
  const require = createRequire(import.meta.url);
  setWasmPaths(`${path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm'))}/`);
  wasmPathsSet = true;
}

let kernelsLoaded: Promise<boolean> | null = null;

/**
 * Loads `@regkit/kernels` (WebAssembly-SIMD kernels for cpu and wasm) when it is installed:
 * an optional peer, imported dynamically so core never depends on it. Resolves to whether
 * it was loaded; its kernels then replace core's JavaScript ones under the same names.
 */
export function loadOptionalKernels(): Promise<boolean> {
  kernelsLoaded ??= importOptional('@regkit/kernels').then(
    async (mod) => {
      const kernels = mod as { initKernels?: () => Promise<void>; registerKernels?: () => void };
      if (!kernels.initKernels || !kernels.registerKernels) return false;
      await kernels.initKernels();
      kernels.registerKernels();
      return true;
    },
    () => false,
  );
  return kernelsLoaded;
}

/**
 * The kernel module of `@regkit/kernels` (or any module with the same two functions):
 * `initKernels()` compiles the WebAssembly, `registerKernels()` registers the kernels for
 * the cpu and wasm backends.
 */
export interface KernelModule {
  initKernels(): Promise<void>;
  registerKernels(): void;
}

/** Options of {@link initBackend}. */
export interface InitBackendOptions {
  /**
   * `@regkit/kernels` as imported by the caller (`await import('@regkit/kernels')`): the one
   * way to get the kernels where core cannot resolve the package by name (a workspace, a
   * bundler). Without it, core tries to import `@regkit/kernels` by name.
   */
  kernels?: KernelModule;
}

/** Registers the kernels of a module the caller imported (each call: registration is cheap and idempotent). */
async function useKernelModule(kernels: KernelModule): Promise<void> {
  if (typeof kernels?.initKernels !== 'function' || typeof kernels.registerKernels !== 'function') {
    throw new RegkitBackendError(
      `initBackend(): 'kernels' must be the @regkit/kernels module (initKernels, registerKernels)`,
    );
  }
  await kernels.initKernels();
  kernels.registerKernels();
}

async function tryBackend(name: BackendName, options: InitBackendOptions): Promise<void> {
  if (name === 'tensorflow') {
    if (!isNode) throw new Error('the tensorflow backend needs Node.js');
    const errors: string[] = [];
    for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
      try {
        await importOptional(pkg);
        break;
      } catch (e) {
        errors.push(`${pkg}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    if (!tf.findBackendFactory('tensorflow')) {
      throw new Error(
        `neither @tensorflow/tfjs-node-gpu nor @tensorflow/tfjs-node could be loaded (${errors.join('; ')})`,
      );
    }
  }
  if (name === 'wasm') await locateWasmFiles();
  const ok = await tf.setBackend(name);
  if (!ok) throw new Error(`tf.setBackend('${name}') failed`);
  await tf.ready();
  if (name === 'wasm') guardWasmHeap();
  if (name !== 'tensorflow') {
    if (options.kernels) await useKernelModule(options.kernels);
    else await loadOptionalKernels();
  }
}

/**
 * Selects and initialises the fastest available tfjs backend and returns its name.
 *
 * Without `preferred` the order is: `'tensorflow'` (`@tensorflow/tfjs-node-gpu`, then
 * `@tensorflow/tfjs-node`, when installed: optional peers, never installed by regkit),
 * then `'wasm'` (its `.wasm` files are located automatically in Node), then `'cpu'`.
 * With `preferred`, only that backend is tried and failure throws.
 *
 * Gradients of all stock ops are registered by importing `@regkit/core`, and the stock
 * cpu/wasm kernels that are missing or wrong are replaced (see `registerKernelFixes`). On
 * cpu and wasm, the WebAssembly-SIMD kernels of `@regkit/kernels` are registered: from
 * `options.kernels` when given, else by importing the package by name when installed (see
 * `loadOptionalKernels`).
 *
 * On wasm, the heap (at most 4 GiB) is guarded ({@link guardWasmHeap}): a tensor that would
 * not fit throws a `RegkitMemoryError` naming the fix instead of aborting the WebAssembly
 * instance; `withWasmHeapFallback` and `trainRegistration` then move to cpu.
 *
 * @example
 * ```ts
 * import { initBackend } from '@regkit/core';
 * const backend = await initBackend(undefined, { kernels: await import('@regkit/kernels') });
 * ```
 */
export async function initBackend(
  preferred?: BackendName,
  options: InitBackendOptions = {},
): Promise<BackendName> {
  if (preferred !== undefined && !['tensorflow', 'wasm', 'cpu'].includes(preferred)) {
    throw new RegkitBackendError(
      `initBackend(): 'preferred' must be 'tensorflow', 'wasm' or 'cpu', got ${JSON.stringify(preferred)}`,
    );
  }
  const order: BackendName[] = preferred ? [preferred] : ['tensorflow', 'wasm', 'cpu'];
  const failures: string[] = [];
  for (const name of order) {
    try {
      await tryBackend(name, options ?? {});
      return name;
    } catch (e) {
      failures.push(`${name}: ${(e as Error).message}`);
    }
  }
  throw new RegkitBackendError(
    `initBackend(): no backend could be initialised (${failures.join('; ')})`,
  );
}
