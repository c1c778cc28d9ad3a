/**
 * `RegkitLocalNcc` (the fused local NCC loss and its gradients, the contract in
 * `@regkit/core`) for the tfjs cpu and wasm backends, running `csrc/lncc.c` (WebAssembly
 * SIMD, double-precision running box sums).
 */
import { RegkitLocalNcc, type RegkitLocalNccAttrs, type tf } from '@regkit/core';
import { type BackendLike, size } from './backend_io.js';
import { runThreaded, wasmKernels } from './loader.js';
import { runInWasm, threadsFor } from './run_in_wasm.js';

/** Rows of a block of `csrc/lncc.c` (LNCC_BLOCK): threads take whole blocks. */
const LNCC_BLOCK = 8;

/** Kernel function of `RegkitLocalNcc`: outputs `[loss]` or `[loss, dLoss/da, dLoss/db]`. */
export const localNccKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { a, b } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
  const { window, withGrad } = attrs as unknown as RegkitLocalNccAttrs;
  const shape = a.shape;
  const nd = shape.length - 2;
  // 2D runs as 3D with a depth of 1
  const [B, D, H, W, C] = nd === 3 ? shape : [shape[0]!, 1, shape[1]!, shape[2]!, shape[3]!];
  const radius = (w: number) => (w - 1) / 2;
  const [rD, rH, rW] = nd === 3 ? window.map(radius) : [0, ...window.map(radius)];
  const grad = withGrad ? 1 : 0;
  const wasm = wasmKernels();
  const threads = Math.min(threadsFor(size(shape)), Math.ceil(H! / LNCC_BLOCK));
  const workFloats = Math.ceil(wasm.lncc_work_bytes(D!, H!, W!, C!, rD!, grad, threads) / 4);
  const outShapes = withGrad ? [[], [...shape], [...shape]] : [[]];
  return runInWasm(
    backend as BackendLike,
    [a, b],
    outShapes,
    (ptrs) => {
      const [pa, pb, pLoss, pda, pdb, pWork] = withGrad
        ? ptrs
        : [ptrs[0], ptrs[1], ptrs[2], 0, 0, ptrs[3]];
      new Int32Array(wasm.memory.buffer, pWork!, 4).fill(0); // the barrier
      const args = [pa!, pb!, pda!, pdb!, B!, D!, H!, W!, C!, rD!, rH!, rW!, grad, pWork!];
      const loss = runThreaded(
        Array.from({ length: threads }, (_, t) => ({ fn: 'lncc', args: [...args, t, threads] })),
      ) as number;
      new Float32Array(wasm.memory.buffer, pLoss!, 1)[0] = loss;
    },
    [workFloats],
  );
};

/** The kernel config of the WebAssembly local NCC for one backend. */
export function localNccKernelConfig(backendName: string): tf.KernelConfig {
  return { kernelName: RegkitLocalNcc, backendName, kernelFunc: localNccKernelFunc };
}
