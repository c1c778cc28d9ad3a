/**
 * Loads the embedded WebAssembly kernels (no network, no file paths, no configuration:
 * the bytes are inlined into the JavaScript bundle) and manages their memory: a bump
 * allocator in the module's own exported memory, reset at the start of every kernel call.
 */
import { type ConvWasm, createConvModule } from './conv.js';
import convWasm from './wasm/conv.wasm';
import warpWasm from './wasm/warp.wasm';

/** The functions exported by `csrc/warp.c`, `csrc/lncc.c`, `csrc/mind.c` and `csrc/parzen.c`. */
export interface WarpExports {
  memory: WebAssembly.Memory;
  heap_base(): number;
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
  ): void;
  warp_backward(
    dy: number,
    image: number,
    field: number,
    dImage: number,
    dField: number,
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
  ): void;
  resize_axis(
    src: number,
    dst: number,
    outer: number,
    n: number,
    m: number,
    inner: number,
    adjoint: number,
  ): void;
  lncc_work_bytes(D: number, H: number, W: number, C: number, rD: number, withGrad: number): number;
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
  ): number;
  mind_work_floats(B: number, D: number, H: number, W: number, P: number): number;
  mind_ssc(
    image: number,
    out: number,
    B: number,
    D: number,
    H: number,
    W: number,
    radius: number,
    P: number,
    offsets: number,
    work: number,
  ): void;
  parzen_work_bytes(bins: number): number;
  parzen_joint(
    a: number,
    b: number,
    out: number,
    B: number,
    N: number,
    bins: number,
    lo: number,
    range: number,
    sigmaRatio: number,
    work: number,
  ): void;
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
  ): void;
}

const PAGE = 65536;
/** wasm32 memories hold at most 65536 pages (4 GiB). */
const MAX_BYTES = 65536 * PAGE;
const ALIGN = 16;

let module: WarpExports | null = null;
let conv: ConvWasm | null = null;
let loading: Promise<void> | null = null;

/**
 * Compiles and instantiates the embedded kernels (asynchronously, so browsers accept
 * modules of any size on the main thread). Idempotent: later calls return the same
 * promise. Rejects where WebAssembly SIMD is unavailable; a later call then retries.
 *
 * @example
 * ```ts
 * import { initKernels, registerKernels } from '@regkit/kernels';
 * await initKernels();
 * registerKernels();
 * ```
 */
export function initKernels(): Promise<void> {
  loading ??= Promise.all([WebAssembly.instantiate(warpWasm, {}), createConvModule(convWasm)]).then(
    ([result, convolution]) => {
      module = result.instance.exports as unknown as WarpExports;
      conv = convolution;
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

/** Size in bytes of the kernels' WebAssembly memory (0 before {@link initKernels}). */
/** The instantiated convolution module (after `initKernels()`). */
export function convModule(): ConvWasm {
  if (!conv)
    throw new Error('@regkit/kernels: call `await initKernels()` before running the kernels');
  return conv;
}

export function kernelMemoryBytes(): number {
  return module ? module.memory.buffer.byteLength : 0;
}

/**
 * Bump allocator over the module's memory for one kernel call: `alloc` every buffer
 * first (the memory grows as needed, which detaches earlier views), then take views
 * with `f32`. Every call starts again at `heap_base`, so memory grows to the largest
 * call and no further.
 */
export class Arena {
  private next: number;
  private readonly base: number;

  constructor(private readonly wasm: WarpExports) {
    this.base = align(wasm.heap_base());
    this.next = this.base;
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

  /** A float32 view on `count` values at byte offset `ptr` (valid until the next `alloc`). */
  f32(ptr: number, count: number): Float32Array {
    return new Float32Array(this.wasm.memory.buffer, ptr, count);
  }
}

function align(n: number): number {
  return Math.ceil(n / ALIGN) * ALIGN;
}
