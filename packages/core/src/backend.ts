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

/** What `setWasmPaths` was given (by the caller, or the Node package's folder). */
let wasmPathsInUse: WasmPaths | undefined;

/** The three binaries of `@tensorflow/tfjs-backend-wasm`; it loads one, by the page's support. */
export const WASM_FILE_NAMES = [
  'tfjs-backend-wasm.wasm',
  'tfjs-backend-wasm-simd.wasm',
  'tfjs-backend-wasm-threaded-simd.wasm',
] as const;

/** Where the wasm backend finds its `.wasm` files: a folder (URL or path ending in `/`) or one URL per file. */
export type WasmPaths = string | Record<(typeof WASM_FILE_NAMES)[number], string>;

function checkWasmPaths(paths: unknown): asserts paths is WasmPaths {
  if (typeof paths === 'string') {
    if (paths === '') throw new RegkitBackendError(`initBackend(): 'wasmPaths' is empty`);
    return;
  }
  const missing =
    paths && typeof paths === 'object'
      ? WASM_FILE_NAMES.filter((f) => typeof (paths as Record<string, unknown>)[f] !== 'string')
      : WASM_FILE_NAMES;
  if (missing.length > 0) {
    throw new RegkitBackendError(
      `initBackend(): 'wasmPaths' must be a folder URL ending in '/' or a map with a URL for each of ${WASM_FILE_NAMES.join(', ')}; missing ${missing.join(', ')}`,
    );
  }
}

/** True once tfjs has a working wasm backend (its files cannot be moved after that). */
function wasmBackendStarted(): boolean {
  return (tf.engine().registry as Record<string, unknown>).wasm != null;
}

/**
 * Tells tfjs where the wasm files are: `paths` when given (browsers: bundlers do not serve
 * them), else, in Node, the folder of the installed `@tensorflow/tfjs-backend-wasm`.
 */
async function locateWasmFiles(paths: WasmPaths | undefined): Promise<void> {
  if (wasmBackendStarted()) return;
  if (paths !== undefined) {
    if (JSON.stringify(paths) === JSON.stringify(wasmPathsInUse)) return;
    try {
      setWasmPaths(paths);
    } catch {
      // tfjs takes no new paths once an initialisation has failed
      throw new Error(
        `it failed to start earlier with wasmPaths ${JSON.stringify(wasmPathsInUse ?? null)} and tfjs takes no other paths after that: reload the page (or restart the process)`,
      );
    }
    wasmPathsInUse = paths;
    return;
  }
  if (wasmPathsInUse !== undefined || !isNode) return;
  const { createRequire } = (await importOptional('node:module')) as typeof import('node:module');
  const path = (await importOptional('node:path')) as typeof import('node:path');
  const require = createRequire(import.meta.url);
  wasmPathsInUse = `${path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm'))}/`;
  setWasmPaths(wasmPathsInUse);
}

/**
 * The `.wasm` file the wasm backend loads here (tfjs picks the SIMD and threaded builds by
 * feature detection), as a URL or path: `tfjs-backend-wasm[-threaded][-simd].wasm` under
 * `paths`, or relative to the bundled script when no paths were given.
 */
export async function wasmFileLocation(paths?: WasmPaths): Promise<string> {
  const [simd, threads] = await Promise.all([
    tf.env().getAsync('WASM_HAS_SIMD_SUPPORT') as Promise<boolean>,
    tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT') as Promise<boolean>,
  ]);
  const file = WASM_FILE_NAMES[simd ? (threads ? 2 : 1) : 0];
  if (paths === undefined) return file;
  if (typeof paths === 'string') return `${paths}${file}`;
  return paths[file];
}

/**
 * Why the wasm backend could not load its binary, when that is the cause: fetches the file
 * it wanted (browsers, http URLs) or checks that it exists (Node paths). Null when the file
 * is there (the failure lies elsewhere).
 */
async function diagnoseWasmFile(paths: WasmPaths | undefined): Promise<string | null> {
  let where: string;
  try {
    where = await wasmFileLocation(paths);
  } catch {
    return null;
  }
  const shown =
    paths === undefined ? `${where} (next to the bundled script: no wasmPaths given)` : where;
  if (!isNode || /^(https?|blob|data):/i.test(where)) {
    if (typeof fetch !== 'function') return null;
    let url = where;
    try {
      const base = (globalThis as { location?: { href?: string } }).location?.href;
      if (base) url = new URL(where, base).href;
    } catch {}
    try {
      const res = await fetch(url);
      if (!res.ok) return `GET ${url} answered ${res.status} ${res.statusText}`.trim();
      // a server that answers every path with its index page (a single-page app's fallback)
      const head = new Uint8Array(await res.arrayBuffer()).subarray(0, 4);
      if (head.join() !== '0,97,115,109') {
        const type = res.headers.get('content-type') ?? 'no content-type';
        return `GET ${url} answered ${res.status} with ${type}, not a WebAssembly module`;
      }
      return null;
    } catch (e) {
      return `GET ${url} failed: ${(e as Error).message}`;
    }
  }
  try {
    const fs = (await importOptional('node:fs')) as typeof import('node:fs');
    const file = where.startsWith('file:')
      ? ((await importOptional('node:url')) as typeof import('node:url')).fileURLToPath(where)
      : where;
    return fs.existsSync(file) ? null : `${shown} does not exist`;
  } catch {
    return null;
  }
}

const warned = new Set<string>();

/** Reports a problem once per message: `options.onWarning` or `console.warn`. */
function warnOnce(message: string, options: InitBackendOptions): void {
  if (options.onWarning) {
    options.onWarning(message);
    return;
  }
  if (warned.has(message)) return;
  warned.add(message);
  console.warn(message);
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
  /**
   * Where the wasm backend's three `.wasm` files are served (see {@link WASM_FILE_NAMES}): a
   * folder URL ending in `/` (`'/wasm/'`) or a map of each file name to its URL (what a
   * bundler's `?url` imports give). Passed to tfjs's `setWasmPaths` before the backend starts,
   * so a page needs no import of `@tensorflow/tfjs-backend-wasm`. Without it, Node finds the
   * files itself and browsers look next to the bundled script (where bundlers do not put them).
   * Ignored once the wasm backend has started.
   */
  wasmPaths?: WasmPaths;
  /**
   * Receives the warnings of {@link initBackend} (a fallback to cpu, kernels that did not
   * load) instead of `console.warn` (where each message is printed once).
   */
  onWarning?: (message: string) => void;
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
  if (name === 'wasm') await locateWasmFiles(options.wasmPaths);
  const ok = await tf.setBackend(name);
  if (!ok) {
    const why = name === 'wasm' ? await diagnoseWasmFile(wasmPathsInUse) : null;
    throw new Error(`tf.setBackend('${name}') failed${why ? `: ${why}` : ''}`);
  }
  await tf.ready();
  if (name === 'wasm') guardWasmHeap();
  if (name !== 'tensorflow') {
    if (options.kernels) {
      try {
        await useKernelModule(options.kernels);
      } catch (e) {
        if (e instanceof RegkitBackendError) throw e;
        warnOnce(
          `initBackend(): @regkit/kernels could not start on ${name} (${(e as Error).message}); running regkit's JavaScript kernels, which are slower`,
          options,
        );
      }
    } else if (!(await loadOptionalKernels()) && !isNode) {
      warnOnce(
        `initBackend(): @regkit/kernels was not loaded (a bundle cannot import it by name); pass initBackend(name, { kernels: await import('@regkit/kernels') }) for its WebAssembly-SIMD kernels`,
        options,
      );
    }
  }
}

/**
 * Selects and initialises the fastest available tfjs backend and returns its name.
 *
 * Without `preferred` the order is: `'tensorflow'` (Node only: `@tensorflow/tfjs-node-gpu`,
 * then `@tensorflow/tfjs-node`, when installed: optional peers, never installed by regkit),
 * then `'wasm'` (its `.wasm` files are located automatically in Node; a page passes
 * `wasmPaths`), then `'cpu'`. Falling back from wasm to cpu warns once (`console.warn`, or
 * `options.onWarning`), naming what failed: e.g. the `.wasm` URL that answered 404.
 * With `preferred`, only that backend is tried and failure throws a `RegkitBackendError`
 * with the same reason.
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
 * // in a browser bundle, with the three .wasm files of @tensorflow/tfjs-backend-wasm served at /wasm/:
 * // await initBackend('wasm', { wasmPaths: '/wasm/', kernels: await import('@regkit/kernels') });
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
  const opts = options ?? {};
  if (opts.wasmPaths !== undefined) checkWasmPaths(opts.wasmPaths);
  // in a browser the tensorflow backend is not an option, so its absence is no failure
  const order: BackendName[] = preferred
    ? [preferred]
    : isNode
      ? ['tensorflow', 'wasm', 'cpu']
      : ['wasm', 'cpu'];
  const failures: string[] = [];
  for (const name of order) {
    try {
      await tryBackend(name, opts);
      const wasmFailure = failures.find((f) => f.startsWith('wasm: '));
      if (name === 'cpu' && wasmFailure) {
        warnOnce(
          `initBackend(): the wasm backend failed (${wasmFailure.slice(6)}); falling back to the cpu backend, 10–100× slower. Serve the .wasm files of @tensorflow/tfjs-backend-wasm and pass initBackend(undefined, { wasmPaths: '<their folder URL>/' })`,
          opts,
        );
      }
      return name;
    } catch (e) {
      if (e instanceof RegkitBackendError) throw e;
      failures.push(`${name}: ${(e as Error).message}`);
    }
  }
  throw new RegkitBackendError(
    `initBackend(): no backend could be initialised (${failures.join('; ')})`,
  );
}
