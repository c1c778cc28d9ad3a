/**
 * `RegkitMindSsc` (the MIND-SSC descriptor, forward only; the contract in `@regkit/core`,
 * the definition in `@regkit/losses`' `mindSsc`) for the tfjs cpu and wasm backends,
 * running `csrc/mind.c` (WebAssembly SIMD).
 */
import { RegkitMindSsc, type RegkitMindSscAttrs, type tf } from '@regkit/core';
import type { BackendLike } from './backend_io.js';
import { wasmKernels } from './loader.js';
import { runInWasm } from './run_in_wasm.js';

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
  const workFloats = wasm.mind_work_floats(B!, D!, H!, W!, P);
  return runInWasm(
    backend as BackendLike,
    [image],
    [[...shape.slice(0, -1), P]],
    ([img, out, offs, work]) => {
      new Int32Array(wasm.memory.buffer, offs!, 6 * P).set(offsets);
      wasm.mind_ssc(img!, out!, B!, D!, H!, W!, radius, P, offs!, work!);
    },
    [6 * P, workFloats],
  );
};

/** The kernel config of the WebAssembly MIND-SSC for one backend. */
export function mindSscKernelConfig(backendName: string): tf.KernelConfig {
  return { kernelName: RegkitMindSsc, backendName, kernelFunc: mindSscKernelFunc };
}
