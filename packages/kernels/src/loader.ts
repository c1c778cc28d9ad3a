/**
 * Loads the embedded WebAssembly kernels (no network, no file paths, no configuration:
 * the bytes are inlined into the JavaScript bundle) and manages their memory: a bump
 * allocator in the module's own exported memory, reset at the start of every kernel call.
 */
import {
  availableCores,
  DEFAULT_MAX_THREADS,
  type KernelCall,
  MAX_THREADS,
  ThreadPool,
  threadsFromEnv,
  threadsUnavailableReason,
  WORKER_STACK_BYTES,
} from './threads.js';
import warpWasm from './wasm/warp.wasm';

/**
 * The functions exported by `csrc/warp.c`, `csrc/lncc.c`, `csrc/mind.c` and `csrc/parzen.c`
 * (those of `csrc/conv.c`: `ConvExports` in conv.ts).
 */
export interface WarpExports {
  /** The module's memory: imported (shared where the platform allows), not exported. */
  memory: WebAssembly.Memory;
  __stack_pointer: WebAssembly.Global;
  heap_base(): number;
  leaky_relu(x: number, y: number, alpha: number, i0: number, i1: number): void;
  leaky_relu_grad(dy: number, x: number, dx: number, alpha: number, i0: number, i1: number): void;
  max_pool(...args: number[]): void;
  max_pool_grad(...args: number[]): void;
  sum_rows_chunks(...args: number[]): void;
  sum_rows_finish(...args: number[]): void;
  concat_rows(...args: number[]): void;
  upsample_nearest(...args: number[]): void;
  upsample_nearest_grad(...args: number[]): void;
  warp_forward(
    image: number,
    field: number,
    out: number,
    B: number,
    D: number,
    H: number,
    W: number,
    C: number,
    Do: number,
    Ho: number,
    Wo: number,
    nd: number,
    mode: number,
    r0: number,
    r1: number,
  ): void;
  warp_touched(
    field: number,
    D: number,
    H: number,
    Do: number,
    Ho: number,
    Wo: number,
    nd: number,
    mode: number,
    chunks: number,
    k0: number,
    k1: number,
    range: number,
  ): void;
  warp_backward_rows(
    dy: number,
    image: number,
    field: number,
    dImage: number,
    dField: number,
    D: number,
    H: number,
    W: number,
    C: number,
    Do: number,
    Ho: number,
    Wo: number,
    nd: number,
    mode: number,
    r0: number,
    r1: number,
    lo: number,
    hi: number,
  ): void;
  warp_reduce(
    acc: number,
    unit: number,
    u0: number,
    u1: number,
    count: number,
    slabs: number,
    range: number,
  ): void;
  zero_f32(p: number, n: number): void;
  resize_axis(
    src: number,
    dst: number,
    outer: number,
    n: number,
    m: number,
    inner: number,
    adjoint: number,
    o0: number,
    o1: number,
    q0: number,
    q1: number,
  ): void;
  lncc_work_bytes(
    D: number,
    H: number,
    W: number,
    C: number,
    rD: number,
    withGrad: number,
    threads: number,
  ): number;
  lncc(
    a: number,
    b: number,
    da: number,
    db: number,
    B: number,
    D: number,
    H: number,
    W: number,
    C: number,
    rD: number,
    rH: number,
    rW: number,
    withGrad: number,
    work: number,
    t: number,
    T: number,
  ): number;
  mind_work_floats(B: number, D: number, H: number, W: number, P: number, T: number): number;
  mind_planes(
    img: number,
    b: number,
    D: number,
    H: number,
    W: number,
    r: number,
    offsets: number,
    ssd: number,
    tmp: number,
    c0: number,
    c1: number,
  ): void;
  mind_reduce(
    out: number,
    b: number,
    N: number,
    P: number,
    ssd: number,
    variance: number,
    sums: number,
    k0: number,
    k1: number,
  ): void;
  mind_finish(
    out: number,
    B: number,
    N: number,
    P: number,
    variance: number,
    sums: number,
    v0: number,
    v1: number,
  ): void;
  mind_grad_work_floats(B: number, D: number, H: number, W: number, P: number, T: number): number;
  mind_bwd_voxels(
    dy: number,
    d: number,
    B: number,
    N: number,
    P: number,
    variance: number,
    sums: number,
    g: number,
    b: number,
    v0: number,
    v1: number,
  ): void;
  mind_bwd_planes(
    img: number,
    b: number,
    D: number,
    H: number,
    W: number,
    r: number,
    offsets: number,
    g: number,
    tmp: number,
    tmp2: number,
    c0: number,
    c1: number,
  ): void;
  mind_bwd_gather(
    g: number,
    dimg: number,
    b: number,
    N: number,
    P: number,
    v0: number,
    v1: number,
  ): void;
  parzen_work_bytes(bins: number, B: number, N: number): number;
  parzen_chunks(
    a: number,
    b: number,
    B: number,
    N: number,
    bins: number,
    lo: number,
    range: number,
    sigmaRatio: number,
    work: number,
    c0: number,
    c1: number,
  ): void;
  parzen_finish(out: number, B: number, N: number, bins: number, work: number): void;
  parzen_joint_grad(
    a: number,
    b: number,
    g: number,
    da: number,
    db: number,
    B: number,
    N: number,
    bins: number,
    lo: number,
    range: number,
    sigmaRatio: number,
    n0: number,
    n1: number,
  ): void;
}

const PAGE = 65536;
/** wasm32 memories hold at most 65536 pages (4 GiB). */
const MAX_BYTES = 65536 * PAGE;
const ALIGN = 16;
/** Initial size of the kernels' memory: `-Wl,--initial-memory` of scripts/build-wasm.sh. */
const INITIAL_PAGES = 32;

/** Exports of warp.wasm that worker threads run (each takes a work range). */
const THREADED_FUNCTIONS = [
  'warp_forward',
  'warp_touched',
  'warp_backward_rows',
  'warp_reduce',
  'zero_f32',
  'resize_axis',
  'lncc',
  'parzen_chunks',
  'mind_planes',
  'mind_reduce',
  'mind_finish',
  'mind_bwd_voxels',
  'mind_bwd_planes',
  'mind_bwd_gather',
  'parzen_joint_grad',
  'conv_gather',
  'conv_filter_chunks',
  'conv_filter_reduce',
  'jacobian_det',
  'jacobian_cofactors',
  'jacobian_gather',
  'leaky_relu',
  'leaky_relu_grad',
  'max_pool',
  'max_pool_grad',
  'sum_rows_chunks',
  'sum_rows_finish',
  'concat_rows',
  'upsample_nearest',
  'upsample_nearest_grad',
] as const;

/** Options of {@link initKernels}. */
export interface KernelOptions {
  /**
   * Threads the kernels use (the calling thread included; 1: no workers). Default: the
   * `REGKIT_THREADS` environment variable (Node), else the number of cores, at most 8.
   * Capped at 16. Ignored (1 thread) where worker threads are unavailable: see
   * {@link kernelThreadsReason}.
   */
  threads?: number;
}

let module: WarpExports | null = null;
let compiled: WebAssembly.Module | null = null;
let loading: Promise<void> | null = null;
let pool: ThreadPool | null = null;
let requested: number | undefined;
let reason: string | null = 'initKernels() has not run';
/** First byte the arena may use: after heap_base and the worker stacks. */
let arenaBase = 0;

/**
 * Compiles and instantiates the embedded kernels (asynchronously, so browsers accept
 * modules of any size on the main thread) and starts the worker threads. Idempotent: later
 * calls return the same promise (use {@link setKernelThreads} to change the thread count).
 * Rejects where WebAssembly SIMD is unavailable; a later call then retries.
 *
 * @example
 * ```ts
 * import { initKernels, registerKernels } from '@regkit/kernels';
 * await initKernels({ threads: 4 });
 * registerKernels();
 * ```
 */
export function initKernels(options: KernelOptions = {}): Promise<void> {
  if (options.threads !== undefined) {
    if (!Number.isInteger(options.threads) || options.threads < 0) {
      return Promise.reject(
        new Error(`@regkit/kernels: 'threads' must be an integer >= 0, got ${options.threads}`),
      );
    }
    if (requested === undefined) requested = options.threads || undefined;
  }
  try {
    threadsFromEnv(); // a clear error for an invalid REGKIT_THREADS, before anything starts
  } catch (e) {
    return Promise.reject(e);
  }
  loading ??= instantiateWarp().then(
    async (instance) => {
      module = instance;
      arenaBase = align(instance.heap_base());
      await startThreads(targetThreads());
    },
    (e: unknown) => {
      loading = null;
      throw new Error(
        `@regkit/kernels: the WebAssembly kernels could not be compiled (WebAssembly SIMD is required): ${(e as Error).message}`,
      );
    },
  );
  return loading;
}

/** Shared memory where the platform has it; else the module's memory import is made unshared. */
async function instantiateWarp(): Promise<WarpExports> {
  let shared = true;
  try {
    new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
  } catch {
    shared = false;
  }
  const bytes = shared ? warpWasm : unshareMemoryImport(warpWasm);
  compiled = await WebAssembly.compile(bytes as BufferSource);
  let memory: WebAssembly.Memory | null = null;
  // a 4 GiB maximum reserves that much address space for a shared memory: try less if refused
  for (const maximum of [65536, 32768, 16384]) {
    try {
      memory = new WebAssembly.Memory({ initial: INITIAL_PAGES, maximum, shared });
      break;
    } catch (e) {
      if (maximum === 16384) throw e;
    }
  }
  const instance = await WebAssembly.instantiate(compiled, { env: { memory: memory! } });
  return { ...(instance.exports as unknown as WarpExports), memory: memory! };
}

/**
 * The module bytes with the memory import's `shared` flag cleared (limits flags 0x03 → 0x01),
 * for platforms without shared WebAssembly memory (then the kernels run on one thread).
 */
function unshareMemoryImport(bytes: Uint8Array): Uint8Array {
  const out = bytes.slice();
  let p = 8;
  const leb = (): number => {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = out[p++]!;
      result += (b & 0x7f) * 2 ** shift;
      shift += 7;
      if (!(b & 0x80)) return result;
    }
  };
  while (p < out.length) {
    const id = out[p++]!;
    const size = leb();
    const end = p + size;
    if (id === 2) {
      const count = leb();
      for (let i = 0; i < count; i++) {
        const moduleName = leb();
        p += moduleName;
        const fieldName = leb();
        p += fieldName;
        const kind = out[p++]!;
        if (kind === 2) {
          if (out[p] === 0x03) out[p] = 0x01;
          return out;
        }
        if (kind === 0) leb();
        else if (kind === 1) {
          p++;
          const flags = out[p++]!;
          leb();
          if (flags & 1) leb();
        } else if (kind === 3) p += 2;
        else throw new Error('@regkit/kernels: unexpected import in warp.wasm');
      }
    }
    p = end;
  }
  return out;
}

function targetThreads(): number {
  return requested ?? threadsFromEnv() ?? 0;
}

/** Starts (or restarts) the pool with `n` threads (0: the default); records why not when it cannot. */
async function startThreads(n: number): Promise<void> {
  pool?.terminate();
  pool = null;
  const wasm = wasmKernels();
  arenaBase = align(wasm.heap_base());
  const count = Math.min(
    MAX_THREADS,
    n > 0 ? Math.floor(n) : Math.min(DEFAULT_MAX_THREADS, await availableCores()),
  );
  if (count <= 1) {
    reason = 'one thread requested';
    return;
  }
  const why = threadsUnavailableReason();
  if (why) {
    reason = why;
    return;
  }
  const stacksEnd = arenaBase + (count - 1) * WORKER_STACK_BYTES;
  const have = wasm.memory.buffer.byteLength;
  if (stacksEnd > have) wasm.memory.grow(Math.ceil((stacksEnd - have) / PAGE));
  try {
    pool = await ThreadPool.create(
      count,
      compiled!,
      wasm.memory,
      wasm as unknown as Record<string, unknown>,
      THREADED_FUNCTIONS,
      (i) => arenaBase + (i + 1) * WORKER_STACK_BYTES,
    );
    arenaBase = stacksEnd;
    reason = null;
  } catch (e) {
    reason = `worker threads could not start: ${(e as Error).message}`;
  }
}

/**
 * Sets the number of threads the kernels use (the calling thread included; 1: no workers;
 * 0: the default of {@link initKernels}) and starts or stops workers to match. Resolves with
 * the count in use ({@link kernelThreads}). Must not run while a kernel call is running.
 */
export async function setKernelThreads(threads: number): Promise<number> {
  if (!Number.isInteger(threads) || threads < 0) {
    throw new Error(`@regkit/kernels: setKernelThreads needs an integer >= 0, got ${threads}`);
  }
  requested = threads === 0 ? undefined : threads;
  if (loading) {
    await loading;
    await startThreads(targetThreads());
  }
  return kernelThreads();
}

/** Threads the kernels use now (1 before {@link initKernels} and where workers are unavailable). */
export function kernelThreads(): number {
  return pool?.size ?? 1;
}

/**
 * Why the kernels run on one thread (null when they use several): e.g. 'one thread
 * requested', 'SharedArrayBuffer is unavailable (…)', 'Atomics.wait is not allowed on this
 * thread (…)'.
 */
export function kernelThreadsReason(): string | null {
  return reason;
}

/** True once {@link initKernels} has resolved: the kernels can run synchronously. */
export function kernelsReady(): boolean {
  return module !== null;
}

/** The instantiated module; throws if {@link initKernels} has not resolved yet. */
export function wasmKernels(): WarpExports {
  if (!module) {
    throw new Error('@regkit/kernels: call `await initKernels()` before running the kernels');
  }
  return module;
}

/**
 * Runs the calls of warp.wasm exports at once, one per thread (the first on this thread);
 * without workers, one after the other here. The calls must write disjoint memory (or meet at
 * barriers: then never more calls than {@link kernelThreads}). Returns what the first returned.
 */
export function runThreaded(calls: readonly KernelCall[]): unknown {
  if (pool && calls.length > 1) return pool.run(calls);
  const wasm = wasmKernels() as unknown as Record<string, (...a: number[]) => unknown>;
  let first: unknown;
  calls.forEach(({ fn, args }, i) => {
    const r = wasm[fn]!(...args);
    if (i === 0) first = r;
  });
  return first;
}

/** Size in bytes of the kernels' WebAssembly memory (0 before {@link initKernels}). */
export function kernelMemoryBytes(): number {
  return module ? module.memory.buffer.byteLength : 0;
}

/**
 * Bump allocator over the module's memory for one kernel call: `alloc` every buffer
 * first (the memory grows as needed, which detaches earlier views), then take views
 * with `f32`. Every call starts again at the same base (after the worker stacks), so
 * memory grows to the largest call and no further.
 */
export class Arena {
  private next: number;

  constructor(private readonly wasm: WarpExports) {
    this.next = arenaBase || align(wasm.heap_base());
  }

  /** Reserves `count` float32 values; returns their byte offset (16-byte aligned). */
  alloc(count: number): number {
    const ptr = this.next;
    const end = align(ptr + count * 4);
    if (end > MAX_BYTES) {
      throw new Error(
        `@regkit/kernels: a kernel call needs ${end} bytes, more than WebAssembly's 4 GiB`,
      );
    }
    const memory = this.wasm.memory;
    const have = memory.buffer.byteLength;
    if (end > have) memory.grow(Math.ceil((end - have) / PAGE));
    this.next = end;
    return ptr;
  }

  /** The current top: {@link release} frees everything allocated after it. */
  mark(): number {
    return this.next;
  }

  /** Frees the allocations made after `mark`. */
  release(mark: number): void {
    this.next = mark;
  }

  /** A float32 view on `count` values at byte offset `ptr` (valid until the next `alloc`). */
  f32(ptr: number, count: number): Float32Array {
    return new Float32Array(this.wasm.memory.buffer, ptr, count);
  }

  /** An int32 view on `count` values at byte offset `ptr` (valid until the next `alloc`). */
  i32(ptr: number, count: number): Int32Array {
    return new Int32Array(this.wasm.memory.buffer, ptr, count);
  }
}

function align(n: number): number {
  return Math.ceil(n / ALIGN) * ALIGN;
}
