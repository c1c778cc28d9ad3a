/**
 * `RegkitMindSsc` (the MIND-SSC descriptor; the contract in `@regkit/core`, the definition
 * in `@regkit/losses`' `mindSsc`) and its gradient `RegkitMindSscGrad` for the tfjs cpu and
 * wasm backends, running `csrc/mind.c` (WebAssembly SIMD) on worker threads. Every output
 * value is written by one thread in a fixed order (sums over fixed chunks), so results are
 * bit-identical at any thread count.
 */
import { RegkitMindSsc, type RegkitMindSscAttrs, RegkitMindSscGrad, type tf } from '@regkit/core';
import type { BackendLike } from './backend_io.js';
import { runThreaded, wasmKernels } from './loader.js';
import { runInWasm, threadsFor } from './run_in_wasm.js';
import { splitRange } from './threads.js';

/** Voxels per chunk of the mean of V (MIND_CHUNK of csrc/mind.c). */
const MIND_CHUNK = 65536;

/** Geometry of a MIND-SSC call: [B, D, H, W] (2D: D = 1) and the offsets int32 [P, 6] (throws on bad input). */
function mindGeometry(
  kernel: string,
  image: tf.TensorInfo,
  attrs: RegkitMindSscAttrs,
): { B: number; D: number; H: number; W: number; P: number; offsets: Int32Array } {
  const { pairs } = attrs;
  const shape = image.shape;
  const nd = shape.length - 2;
  if ((nd !== 2 && nd !== 3) || shape[shape.length - 1] !== 1) {
    throw new Error(
      `${kernel}: 'image' must be [B, H, W, 1] or [B, D, H, W, 1], got [${shape.join(', ')}]`,
    );
  }
  const P = pairs.length;
  if (P < 1 || P > 64) throw new Error(`${kernel}: 1 to 64 offset pairs, got ${P}`);
  // 2D runs as 3D with a depth of 1 and no depth offsets
  const [B, D, H, W] = nd === 3 ? shape : [shape[0]!, 1, shape[1]!, shape[2]!];
  const offsets = new Int32Array(6 * P);
  pairs.forEach(([p, q], c) => {
    const pad = (o: number[]) => (nd === 3 ? o : [0, ...o]);
    offsets.set([...pad(p), ...pad(q)], 6 * c);
  });
  return { B: B!, D: D!, H: H!, W: W!, P, offsets };
}

/** Kernel function of `RegkitMindSsc`: image `[B, ...S, 1]` → `[B, ...S, P]`. */
export const mindSscKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { image } = inputs as { image: tf.TensorInfo };
  const { radius } = attrs as unknown as RegkitMindSscAttrs;
  const shape = image.shape;
  const { B, D, H, W, P, offsets } = mindGeometry(
    RegkitMindSsc,
    image,
    attrs as unknown as RegkitMindSscAttrs,
  );
  const wasm = wasmKernels();
  const N = D * H * W;
  const threads = threadsFor(B * N * P);
  const workFloats = wasm.mind_work_floats(B, D, H, W, P, threads);
  // work: ssd [P, N], tmp [threads, N], var [B, N], chunk sums (double) [B, chunks]
  const sumsFloats = (P + threads) * N + B * N;
  const sumsOffset = 4 * (sumsFloats + (sumsFloats & 1));
  return runInWasm(
    backend as BackendLike,
    [image],
    [[...shape.slice(0, -1), P]],
    ([img, out, offs, work]) => {
      new Int32Array(wasm.memory.buffer, offs!, 6 * P).set(offsets);
      const ssd = work!;
      const variance = work! + 4 * (P + threads) * N;
      const sums = work! + sumsOffset;
      for (let b = 0; b < B; b++) {
        runThreaded(
          splitRange(P, threads).map(([c0, c1], t) => ({
            fn: 'mind_planes',
            args: [img!, b, D, H, W, radius, offs!, ssd, work! + 4 * (P + t) * N, c0, c1],
          })),
        );
        runThreaded(
          splitRange(Math.ceil(N / MIND_CHUNK), threads).map(([k0, k1]) => ({
            fn: 'mind_reduce',
            args: [out!, b, N, P, ssd, variance, sums, k0, k1],
          })),
        );
      }
      runThreaded(
        splitRange(B * N, threads).map(([v0, v1]) => ({
          fn: 'mind_finish',
          args: [out!, B, N, P, variance, sums, v0, v1],
        })),
      );
    },
    [6 * P, workFloats],
  );
};

/**
 * Kernel function of `RegkitMindSscGrad`: inputs `dy` `[B, ...S, P]` and `image`
 * `[B, ...S, 1]` → dImage `[B, ...S, 1]` (the forward recomputed inside; formulas in
 * csrc/mind.c).
 */
export const mindSscGradKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, image } = inputs as { dy: tf.TensorInfo; image: tf.TensorInfo };
  const { radius } = attrs as unknown as RegkitMindSscAttrs;
  const { B, D, H, W, P, offsets } = mindGeometry(
    RegkitMindSscGrad,
    image,
    attrs as unknown as RegkitMindSscAttrs,
  );
  const want = [...image.shape.slice(0, -1), P];
  if (dy.shape.length !== want.length || dy.shape.some((n, i) => n !== want[i])) {
    throw new Error(
      `${RegkitMindSscGrad}: 'dy' must be [${want.join(', ')}], got [${dy.shape.join(', ')}]`,
    );
  }
  const wasm = wasmKernels();
  const N = D * H * W;
  const threads = threadsFor(B * N * P);
  const chunks = Math.ceil(N / MIND_CHUNK);
  // work: d [B, N, P], planes [P, N], tmp [2 threads, N], var [B, N], chunk sums (double)
  const workFloats = wasm.mind_grad_work_floats(B, D, H, W, P, threads);
  const sumsFloats = B * N * P + (P + 2 * threads) * N + B * N;
  return runInWasm(
    backend as BackendLike,
    [image, dy],
    [[...image.shape]],
    ([img, pdy, dimg, offs, work]) => {
      new Int32Array(wasm.memory.buffer, offs!, 6 * P).set(offsets);
      const d = work!;
      const planes = d + 4 * B * N * P;
      const tmp = (t: number) => planes + 4 * (P + t) * N;
      const variance = planes + 4 * (P + 2 * threads) * N;
      const sums = work! + 4 * (sumsFloats + (sumsFloats & 1));
      // the forward's d and V of every batch item (the clamp needs the mean over all of them)
      for (let b = 0; b < B; b++) {
        runThreaded(
          splitRange(P, threads).map(([c0, c1], t) => ({
            fn: 'mind_planes',
            args: [img!, b, D, H, W, radius, offs!, planes, tmp(t), c0, c1],
          })),
        );
        runThreaded(
          splitRange(chunks, threads).map(([k0, k1]) => ({
            fn: 'mind_reduce',
            args: [d, b, N, P, planes, variance, sums, k0, k1],
          })),
        );
      }
      for (let b = 0; b < B; b++) {
        runThreaded(
          splitRange(N, threads).map(([v0, v1]) => ({
            fn: 'mind_bwd_voxels',
            args: [pdy!, d, B, N, P, variance, sums, planes, b, v0, v1],
          })),
        );
        runThreaded(
          splitRange(P, threads).map(([c0, c1], t) => ({
            fn: 'mind_bwd_planes',
            args: [img!, b, D, H, W, radius, offs!, planes, tmp(2 * t), tmp(2 * t + 1), c0, c1],
          })),
        );
        runThreaded(
          splitRange(N, threads).map(([v0, v1]) => ({
            fn: 'mind_bwd_gather',
            args: [planes, dimg!, b, N, P, v0, v1],
          })),
        );
      }
    },
    [6 * P, workFloats],
  )[0]!;
};

/** The kernel config of the WebAssembly MIND-SSC for one backend. */
export function mindSscKernelConfig(backendName: string): tf.KernelConfig {
  return { kernelName: RegkitMindSsc, backendName, kernelFunc: mindSscKernelFunc };
}

/** The kernel configs of the WebAssembly MIND-SSC and its gradient for one backend. */
export function mindSscKernelConfigs(backendName: string): tf.KernelConfig[] {
  return [
    mindSscKernelConfig(backendName),
    { kernelName: RegkitMindSscGrad, backendName, kernelFunc: mindSscGradKernelFunc },
  ];
}
