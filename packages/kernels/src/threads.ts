/**
 * Worker threads for the kernels: Node `worker_threads`, or Web Workers in browsers when the
 * page is cross-origin isolated. Every worker instantiates the same compiled module on the
 * same shared WebAssembly memory, with a stack of its own; a kernel call hands each worker
 * one call of an exported function (a work range), computes the first range on the calling
 * thread and waits for the others with `Atomics.wait`. Workers are unreferenced (they never
 * keep a Node process alive) and are stopped by {@link setKernelThreads} with a smaller count.
 */

/** A call of an export of the kernel module: its name and its arguments. */
export interface KernelCall {
  fn: string;
  args: number[];
}

/** Most threads the pool starts (explicit counts above are capped here). */
export const MAX_THREADS = 16;
/** Default when neither an option nor `REGKIT_THREADS` says: the cores, at most this many. */
export const DEFAULT_MAX_THREADS = 8;
/** Stack of each worker instance, in the shared memory (the main instance's is 64 KiB too). */
export const WORKER_STACK_BYTES = 65536;

/** Bytes of control block per worker: int32 [seq, done, fn, argc, status], float64 args from byte 32. */
const SLOT_BYTES = 512;
const SLOT_I32 = SLOT_BYTES / 4;
const SLOT_F64 = SLOT_BYTES / 8;
const MAX_ARGS = (SLOT_BYTES - 32) / 8;

/** Runs in every worker (as a classic script: Node `eval` worker or a Blob URL). */
const WORKER_SOURCE = `"use strict";
let port;
function start(d) {
  const instance = new WebAssembly.Instance(d.module, { env: { memory: d.memory } });
  instance.exports.__stack_pointer.value = d.stackTop;
  const ctrl = new Int32Array(d.ctrl);
  const f64 = new Float64Array(d.ctrl);
  const I = d.index * ${SLOT_I32};
  const F = d.index * ${SLOT_F64} + 4;
  const fns = d.names.map((name) => instance.exports[name]);
  port.postMessage('ready');
  let seen = 0; // the control block starts at 0: a task may be posted before this line runs
  for (;;) {
    Atomics.wait(ctrl, I, seen);
    seen = Atomics.load(ctrl, I);
    const fn = ctrl[I + 2];
    if (fn < 0) break;
    const argc = ctrl[I + 3];
    const args = new Array(argc);
    for (let k = 0; k < argc; k++) args[k] = f64[F + k];
    try {
      fns[fn](...args);
      ctrl[I + 4] = 0;
    } catch (e) {
      ctrl[I + 4] = 1;
      port.postMessage(String(e && e.stack ? e.stack : e));
    }
    Atomics.store(ctrl, I + 1, seen);
    Atomics.notify(ctrl, I + 1);
  }
  if (typeof close === 'function') close();
}
if (typeof self === 'undefined') {
  port = require('node:worker_threads').parentPort;
  port.once('message', start);
} else {
  port = self;
  self.onmessage = (e) => { self.onmessage = null; start(e.data); };
}
`;

interface WorkerHandle {
  post(message: unknown): void;
  terminate(): void;
}

const isNode =
  typeof process !== 'undefined' &&
  typeof (process as { versions?: { node?: string } }).versions?.node === 'string';

function importOptional(name: string): Promise<unknown> {
  return import(/* webpackIgnore: true */ /* @vite-ignore */ name);
}

/**
 * Why worker threads cannot run here (null when they can): shared WebAssembly memory and
 * `Atomics.wait` on this thread are needed.
 */
export function threadsUnavailableReason(): string | null {
  if (typeof SharedArrayBuffer === 'undefined') {
    return 'SharedArrayBuffer is unavailable (in browsers: the page is not cross-origin isolated)';
  }
  const g = globalThis as { crossOriginIsolated?: boolean; Worker?: unknown };
  if (!isNode) {
    if (g.crossOriginIsolated === false) return 'the page is not cross-origin isolated';
    if (typeof g.Worker === 'undefined') return 'Web Workers are unavailable';
  }
  try {
    new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
  } catch {
    return 'shared WebAssembly memory is unavailable';
  }
  try {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0);
  } catch {
    return 'Atomics.wait is not allowed on this thread (a browser main thread): run the kernels in a Worker';
  }
  return null;
}

/** Number of logical cores (1 when unknown). */
export async function availableCores(): Promise<number> {
  if (isNode) {
    const os = (await importOptional('node:os')) as typeof import('node:os');
    return os.availableParallelism?.() ?? os.cpus().length ?? 1;
  }
  const n = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator
    ?.hardwareConcurrency;
  return n && n > 0 ? n : 1;
}

/** `REGKIT_THREADS` as a thread count (undefined when unset); throws when it is not a positive integer. */
export function threadsFromEnv(): number | undefined {
  if (!isNode) return undefined;
  const raw = (process as { env?: Record<string, string | undefined> }).env?.REGKIT_THREADS;
  if (raw === undefined || raw.trim() === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`@regkit/kernels: REGKIT_THREADS must be a positive integer, got '${raw}'`);
  }
  return n;
}

async function spawnWorker(init: Record<string, unknown>): Promise<WorkerHandle> {
  if (isNode) {
    const { Worker } = (await importOptional(
      'node:worker_threads',
    )) as typeof import('node:worker_threads');
    // a classic script: without the parent's --input-type (which would make it a module)
    const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
    const w = new Worker(WORKER_SOURCE, { eval: true, execArgv });
    await new Promise<void>((resolve, reject) => {
      w.once('error', reject);
      w.once('message', () => {
        w.off('error', reject);
        resolve();
      });
      w.postMessage(init);
    });
    // a worker error after start-up is reported by the call (status), not as an uncaught event
    w.on('error', () => {});
    w.on('message', () => {});
    w.unref();
    return { post: (m) => w.postMessage(m), terminate: () => void w.terminate() };
  }
  const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: 'text/javascript' }));
  const w = new Worker(url);
  await new Promise<void>((resolve, reject) => {
    w.onerror = (e) => reject(new Error(e.message));
    w.onmessage = () => resolve();
    w.postMessage(init);
  });
  URL.revokeObjectURL(url);
  w.onmessage = null;
  return { post: (m) => w.postMessage(m), terminate: () => w.terminate() };
}

/** A pool of `size - 1` workers plus the calling thread, on one module and shared memory. */
export class ThreadPool {
  private readonly ctrl: Int32Array;
  private readonly f64: Float64Array;
  private readonly index = new Map<string, number>();

  private constructor(
    private readonly workers: WorkerHandle[],
    buffer: SharedArrayBuffer,
    private readonly names: readonly string[],
    private readonly exports: Record<string, unknown>,
  ) {
    this.ctrl = new Int32Array(buffer);
    this.f64 = new Float64Array(buffer);
    names.forEach((n, i) => {
      this.index.set(n, i);
    });
  }

  /**
   * Starts `threads - 1` workers. `stackTop(i)`: the top of worker i's stack in `memory`
   * (the caller reserves the stacks).
   */
  static async create(
    threads: number,
    module: WebAssembly.Module,
    memory: WebAssembly.Memory,
    exports: Record<string, unknown>,
    names: readonly string[],
    stackTop: (i: number) => number,
  ): Promise<ThreadPool> {
    const buffer = new SharedArrayBuffer(SLOT_BYTES * Math.max(1, threads - 1));
    const workers: WorkerHandle[] = [];
    try {
      for (let i = 0; i < threads - 1; i++) {
        workers.push(
          await spawnWorker({
            module,
            memory,
            ctrl: buffer,
            index: i,
            names,
            stackTop: stackTop(i),
          }),
        );
      }
    } catch (e) {
      for (const w of workers) w.terminate();
      throw e;
    }
    return new ThreadPool(workers, buffer, names, exports);
  }

  /** Threads of the pool, the calling one included. */
  get size(): number {
    return this.workers.length + 1;
  }

  /**
   * Runs the calls at once: `calls[0]` on this thread, `calls[i]` on worker i - 1; returns when
   * all have finished, with what `calls[0]` returned. At most {@link size} calls.
   */
  run(calls: readonly KernelCall[]): unknown {
    if (calls.length > this.size) {
      throw new Error(`@regkit/kernels: ${calls.length} calls for ${this.size} threads`);
    }
    const seqs: number[] = [];
    for (let i = 1; i < calls.length; i++) {
      const { fn, args } = calls[i]!;
      const id = this.index.get(fn);
      if (id === undefined) throw new Error(`@regkit/kernels: '${fn}' is not a threaded kernel`);
      if (args.length > MAX_ARGS) throw new Error(`@regkit/kernels: too many arguments for ${fn}`);
      const I = (i - 1) * SLOT_I32;
      const F = (i - 1) * SLOT_F64 + 4;
      this.ctrl[I + 2] = id;
      this.ctrl[I + 3] = args.length;
      for (let k = 0; k < args.length; k++) this.f64[F + k] = args[k]!;
      seqs.push(Atomics.add(this.ctrl, I, 1) + 1);
      Atomics.notify(this.ctrl, I);
    }
    let error: unknown = null;
    let result: unknown;
    if (calls.length > 0) {
      try {
        result = (this.exports[calls[0]!.fn] as (...a: number[]) => unknown)(...calls[0]!.args);
      } catch (e) {
        error = e;
      }
    }
    const failed: string[] = [];
    for (let i = 1; i < calls.length; i++) {
      const I = (i - 1) * SLOT_I32;
      const seq = seqs[i - 1]! | 0;
      for (;;) {
        const done = Atomics.load(this.ctrl, I + 1);
        if (done === seq) break;
        Atomics.wait(this.ctrl, I + 1, done);
      }
      if (this.ctrl[I + 4] !== 0) failed.push(`${calls[i]!.fn} on worker ${i}`);
    }
    if (error) throw error;
    if (failed.length > 0) {
      throw new Error(`@regkit/kernels: a kernel failed in a worker thread (${failed.join(', ')})`);
    }
    return result;
  }

  /** Stops every worker. */
  terminate(): void {
    this.workers.forEach((w, i) => {
      const I = i * SLOT_I32;
      this.ctrl[I + 2] = -1;
      Atomics.add(this.ctrl, I, 1);
      Atomics.notify(this.ctrl, I);
      w.terminate();
    });
    this.workers.length = 0;
  }

  /** Names of the functions the workers can run. */
  get functions(): readonly string[] {
    return this.names;
  }
}

/**
 * Splits [0, n) into `parts` contiguous ranges as equal as possible (each a multiple of
 * `multiple` except the last); empty ranges are dropped.
 */
export function splitRange(n: number, parts: number, multiple = 1): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  const units = Math.ceil(n / multiple);
  const p = Math.max(1, Math.min(parts, units));
  for (let i = 0; i < p; i++) {
    const a = Math.min(n, Math.round((units * i) / p) * multiple);
    const b = Math.min(n, Math.round((units * (i + 1)) / p) * multiple);
    if (b > a) out.push([a, b]);
  }
  return out;
}
