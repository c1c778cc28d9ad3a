/**
 * The 4 GiB heap of the tfjs wasm backend: a guard that turns an allocation that would not
 * fit into a {@link RegkitMemoryError} before the heap is exhausted (where tfjs would
 * otherwise write through a null pointer or abort the WebAssembly instance with a bare
 * `RuntimeError: Aborted()`, leaving the backend unusable), and a way out: moving to the
 * cpu backend, which has no such limit.
 */
import { RegkitError } from './errors.js';
import { tf } from './tf.js';

/** A wasm32 memory holds at most 65536 pages of 64 KiB: 4 GiB. */
export const WASM_HEAP_LIMIT_BYTES = 2 ** 32;

/**
 * Default tensor budget of the wasm heap: 3.5 GiB of the 4 GiB, leaving 0.5 GiB for what the
 * backend allocates in C++ (its tensor registry, XNNPACK operators) and for fragmentation.
 */
export const DEFAULT_WASM_HEAP_BUDGET_BYTES = 3.5 * 2 ** 30;

/**
 * Thrown when a tensor would not fit the wasm backend's heap: its message names the tensor,
 * the bytes in use, the budget and the fix. Nothing has been allocated when it is thrown,
 * and the backend stays usable.
 */
export class RegkitMemoryError extends RegkitError {
  override name = 'RegkitMemoryError';
  constructor(
    message: string,
    /** Bytes of the tensor that did not fit. */
    readonly requestedBytes: number,
    /** Bytes of tensors on the wasm heap when it was requested. */
    readonly inUseBytes: number,
    /** The budget in force ({@link wasmHeapBudget}). */
    readonly budgetBytes: number,
  ) {
    super(message);
  }
}

const GiB = 2 ** 30;
const fmtBytes = (bytes: number) =>
  bytes >= GiB ? `${(bytes / GiB).toFixed(2)} GiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;

let budget = DEFAULT_WASM_HEAP_BUDGET_BYTES;

/**
 * The tensor budget of the wasm heap in bytes: an allocation that would take the tensors on
 * the heap above it throws a {@link RegkitMemoryError}. Default
 * {@link DEFAULT_WASM_HEAP_BUDGET_BYTES}.
 */
export function wasmHeapBudget(): number {
  return budget;
}

/**
 * Sets the tensor budget of the wasm heap (bytes, at most {@link WASM_HEAP_LIMIT_BYTES});
 * `undefined` restores the default. Returns the previous budget. Lower it to keep room for
 * something else on the heap, or to rehearse the out-of-memory path on small inputs.
 */
export function setWasmHeapBudget(bytes?: number): number {
  const previous = budget;
  if (bytes === undefined) {
    budget = DEFAULT_WASM_HEAP_BUDGET_BYTES;
    return previous;
  }
  if (!(Number.isFinite(bytes) && bytes > 0 && bytes <= WASM_HEAP_LIMIT_BYTES)) {
    throw new RegkitError(
      `setWasmHeapBudget(): bytes must be in (0, ${WASM_HEAP_LIMIT_BYTES}], got ${bytes}`,
    );
  }
  budget = bytes;
  return previous;
}

/** The parts of tfjs-backend-wasm's `BackendWasm` (4.22) the guard uses. */
interface WasmBackendInternals {
  wasm: {
    _malloc(bytes: number): number;
    _free(ptr: number): void;
    HEAPU8: Uint8Array;
  };
  move(
    dataId: object,
    values: tf.backend_util.BackendValues | null,
    shape: number[],
    dtype: tf.DataType,
    refCount: number,
  ): void;
  disposeData(dataId: object, force?: boolean): boolean;
  dataIdMap: { has(dataId: object): boolean; get(dataId: object): { memoryOffset: number } };
}

interface GuardState {
  /** Bytes of tensors allocated on the heap through `move` and not yet freed. */
  bytes: Map<object, number>;
  total: number;
}

const guarded = new WeakMap<object, GuardState>();

const bytesOf = (shape: number[], dtype: tf.DataType) =>
  dtype === 'string' ? 0 : tf.util.sizeFromShape(shape) * tf.util.bytesPerElement(dtype);

function memoryError(
  shape: number[],
  dtype: tf.DataType,
  requested: number,
  inUse: number,
  why: string,
): RegkitMemoryError {
  return new RegkitMemoryError(
    `regkit: a ${dtype} tensor of shape [${shape.join(', ')}] (${fmtBytes(requested)}) does not fit ` +
      `the tfjs wasm backend's heap: ${why}. The wasm heap holds at most 4 GiB; for inputs of this ` +
      `size use the cpu backend (no such limit, same regkit kernels): ` +
      "`await initBackend('cpu', { kernels: await import('@regkit/kernels') })` (the regkit CLI: " +
      '`--backend cpu`), or ' +
      '`await moveToCpuBackend()` to move live tensors and weights there (trainRegistration does ' +
      'so by itself), or use smaller images or a smaller batch.',
    requested,
    inUse,
    budget,
  );
}

/**
 * Guards the wasm heap of the current backend when it is tfjs's wasm backend (no-op
 * otherwise; idempotent; `initBackend` calls it). Every tensor the backend allocates from
 * JavaScript (kernel outputs, uploads, tensors moved in) is counted; one that would take the
 * count above {@link wasmHeapBudget}, or that its allocator cannot place, throws a
 * {@link RegkitMemoryError} before anything is written, so the backend stays usable.
 * Returns whether the backend is guarded.
 */
export function guardWasmHeap(): boolean {
  if (tf.getBackend() !== 'wasm') return false;
  const backend = tf.backend() as unknown as WasmBackendInternals;
  if (guarded.has(backend)) return true;
  if (typeof backend.move !== 'function' || typeof backend.wasm?._malloc !== 'function') {
    return false;
  }
  const state: GuardState = { bytes: new Map(), total: 0 };
  guarded.set(backend, state);
  const move = backend.move;
  const disposeData = backend.disposeData;
  const check = (shape: number[], dtype: tf.DataType): number => {
    const n = bytesOf(shape, dtype);
    if (n === 0) return 0;
    if (state.total + n > budget) {
      throw memoryError(
        shape,
        dtype,
        n,
        state.total,
        `${fmtBytes(state.total)} of tensors are on the heap and its budget is ${fmtBytes(budget)}`,
      );
    }
    // tfjs does not check malloc's result (0 when the heap is exhausted): probe first
    const probe = backend.wasm._malloc(n) >>> 0;
    if (probe === 0) {
      throw memoryError(
        shape,
        dtype,
        n,
        state.total,
        `its allocator found no room (${fmtBytes(state.total)} of tensors, heap ${fmtBytes(backend.wasm.HEAPU8.length)})`,
      );
    }
    backend.wasm._free(probe);
    return n;
  };
  backend.move = function (dataId, values, shape, dtype, refCount) {
    const n = check(shape, dtype);
    move.call(this, dataId, values, shape, dtype, refCount);
    state.bytes.set(dataId, (state.bytes.get(dataId) ?? 0) + n);
    state.total += n;
  };
  guardMovesInto(backend, check);
  backend.disposeData = function (dataId, force) {
    const freed = disposeData.call(this, dataId, force);
    if (freed) {
      const n = state.bytes.get(dataId);
      if (n !== undefined) {
        state.total -= n;
        state.bytes.delete(dataId);
      }
    }
    return freed;
  };
  return true;
}

interface EngineInternals {
  moveData(backend: object, dataId: object): void;
  state: { tensorInfo: WeakMap<object, { backend: object; shape: number[]; dtype: tf.DataType }> };
}

const moveChecks = new WeakMap<object, (shape: number[], dtype: tf.DataType) => number>();
let engineGuarded = false;

/**
 * tfjs moves a tensor into a backend (`engine.moveData`) by freeing it on the old backend
 * first: a guard that threw inside the new backend's `move` would lose its data. Check
 * before tfjs frees anything instead.
 */
function guardMovesInto(
  backend: object,
  check: (shape: number[], dtype: tf.DataType) => number,
): void {
  moveChecks.set(backend, check);
  if (engineGuarded) return;
  const engine = tf.engine() as unknown as EngineInternals;
  const moveData = engine.moveData;
  engine.moveData = function (target, dataId) {
    const info = this.state.tensorInfo.get(dataId);
    const targetCheck = moveChecks.get(target);
    if (info && targetCheck && info.backend !== target) targetCheck(info.shape, info.dtype);
    moveData.call(this, target, dataId);
  };
  engineGuarded = true;
}

/**
 * Bytes of tensors on the guarded wasm backend's heap (0 on other backends or before
 * {@link guardWasmHeap}).
 */
export function wasmHeapTensorBytes(): number {
  if (tf.getBackend() !== 'wasm') return 0;
  return guarded.get(tf.backend())?.total ?? 0;
}

/**
 * Makes `cpu` the active backend, keeping every live tensor and variable: tfjs moves a
 * tensor's data to the active backend when a kernel first reads it (reading the wasm heap
 * from JavaScript, then freeing it there), so weights and optimiser state carry over. The
 * kernels registered for cpu (core's, `@regkit/kernels`' when registered) stay in force.
 * Returns the previous backend's name.
 */
export async function moveToCpuBackend(): Promise<string> {
  const previous = tf.getBackend();
  if (previous === 'cpu') return previous;
  const ok = await tf.setBackend('cpu');
  if (!ok) throw new RegkitError(`moveToCpuBackend(): tf.setBackend('cpu') failed`);
  await tf.ready();
  return previous;
}

/**
 * Disposes what a gradient computation interrupted by an exception left on tfjs's tape (the
 * tensors its kernels saved for the backward pass are only freed when it completes).
 */
function releaseAbandonedTape(): void {
  const state = tf.engine().state;
  if (state.gradientDepth !== 0 || !state.activeTape) return;
  for (const node of state.activeTape) tf.dispose(node.saved ?? []);
  state.activeTape = null as unknown as typeof state.activeTape;
}

/** Options of {@link withWasmHeapFallback}. */
export interface WasmHeapFallbackOptions {
  /** What runs, for the warning (default 'the computation'). */
  what?: string;
  /** Called with the one-line warning (default `console.warn`). */
  warn?: (message: string) => void;
  /** Called before the retry on cpu: undo what the failed attempt left (default none). */
  beforeRetry?: () => void;
}

/**
 * Runs `fn`; when it throws a {@link RegkitMemoryError} (a tensor that would not fit the wasm
 * heap; nothing was corrupted), moves to the cpu backend with a one-line warning
 * ({@link moveToCpuBackend}: live tensors and weights are kept) and runs `fn` again there.
 * `cpu` then stays the active backend. Any other error is rethrown, as is a memory error on
 * a backend other than wasm. What a gradient computation interrupted by the error saved for
 * its backward pass is disposed; tensors `fn` created outside a `tf.tidy` are not.
 *
 * The wasm heap keeps the memory it grew to (WebAssembly memories never shrink): start on
 * cpu (`initBackend('cpu')`) when the sizes are known not to fit, to skip the attempt.
 *
 * @example
 * ```ts
 * const out = await withWasmHeapFallback(() => model.apply(moving, fixed), { what: 'inference' });
 * ```
 */
export async function withWasmHeapFallback<T>(
  fn: () => T | Promise<T>,
  options: WasmHeapFallbackOptions = {},
): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (!(e instanceof RegkitMemoryError) || tf.getBackend() !== 'wasm') throw e;
    releaseAbandonedTape();
    const warn = options.warn ?? ((m: string) => console.warn(m));
    warn(
      `regkit: ${options.what ?? 'the computation'} needs more than the wasm backend's heap allows ` +
        `(${fmtBytes(e.inUseBytes)} in use + ${fmtBytes(e.requestedBytes)} requested > budget ${fmtBytes(e.budgetBytes)} of 4 GiB): ` +
        "moving to the cpu backend (weights kept; slower; call initBackend('cpu') first to skip this attempt)",
    );
    await moveToCpuBackend();
    options.beforeRetry?.();
    return await fn();
  }
}
