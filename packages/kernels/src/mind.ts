/**
 * `RegkitMindSsc` (the MIND-SSC descriptor, forward only; the contract in `@regkit/core`,
 * the definition in `@regkit/losses`' `mindSsc`) for the tfjs cpu and wasm backends,
 * running `csrc/mind.c` (WebAssembly SIMD).
 */
import { RegkitMindSsc, type RegkitMindSscAttrs, type tf } from '@regkit/core';
import type { BackendLike } from './backend_io.js';
import { runThreaded, wasmKernels } from './loader.js';
import { runInWasm, threadsFor } from './run_in_wasm.js';
import { splitRange } from './threads.js';

/** Voxels per chunk of the mean of V (MIND_CHUNK of csrc/mind.c). */
const MIND_CHUNK = 65536;

/** Kernel function of `RegkitMindSsc`: image `[B, ...S, 1]` → `[B, ...S, P]`. */
export const mindSscKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { image } = inputs as { image: tf.TensorInfo };
  const { radius, pairs } = attrs as unknown as RegkitMindSscAttrs;
  const shape = image.shape;
  const nd = shape.length - 2;
  if ((nd !== 2 && nd !== 3) || shape[shape.length - 1] !== 1) {
    throw new Error(
      `RegkitMindSsc: 'image' must be [B, H, W, 1] or [B, D, H, W, 1], got [${shape.join(', ')}]`,
    );
  }
  // 2D runs as 3D with a depth of 1 and no depth offsets
  const [B, D, H, W] = nd === 3 ? shape : [shape[0]!, 1, shape[1]!, shape[2]!];
  const P = pairs.length;
  const offsets = new Int32Array(6 * P);
  pairs.forEach(([p, q], c) => {
    const pad = (o: number[]) => (nd === 3 ? o : [0, ...o]);
    offsets.set([...pad(p), ...pad(q)], 6 * c);
  });
  const wasm = wasmKernels();
  const N = D! * H! * W!;
  const threads = threadsFor(B! * N * P);
  const workFloats = wasm.mind_work_floats(B!, D!, H!, W!, P, threads);
  // work: ssd [P, N], tmp [threads, N], var [B, N], chunk sums (double) [B, chunks]
  const sumsFloats = (P + threads) * N + B! * N;
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
      for (let b = 0; b < B!; b++) {
        runThreaded(
          splitRange(P, threads).map(([c0, c1], t) => ({
            fn: 'mind_planes',
            args: [img!, b, D!, H!, W!, radius, offs!, ssd, work! + 4 * (P + t) * N, c0, c1],
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
        splitRange(B! * N, threads).map(([v0, v1]) => ({
          fn: 'mind_finish',
          args: [out!, B!, N, P, variance, sums, v0, v1],
        })),
      );
    },
    [6 * P, workFloats],
  );
};

/** The kernel config of the WebAssembly MIND-SSC for one backend. */
export function mindSscKernelConfig(backendName: string): tf.KernelConfig {
  return { kernelName: RegkitMindSsc, backendName, kernelFunc: mindSscKernelFunc };
}
