/**
 * `RegkitParzenJoint` and `RegkitParzenJointGrad` (the Gaussian Parzen joint histogram of the
 * mutual information losses and its gradient; the contract in `@regkit/core`, the
 * definition in `@regkit/losses`' `mutualInformationLoss`) for the tfjs cpu and wasm
 * backends, running `csrc/parzen.c` (WebAssembly SIMD, double-precision sums).
 */
import {
  RegkitParzenJoint,
  type RegkitParzenJointAttrs,
  RegkitParzenJointGrad,
  type tf,
} from '@regkit/core';
import type { BackendLike } from './backend_io.js';
import { runThreaded, wasmKernels } from './loader.js';
import { runInWasm, threadsFor } from './run_in_wasm.js';
import { splitRange } from './threads.js';

/** Samples per chunk of the histogram (PARZEN_CHUNK of csrc/parzen.c). */
const PARZEN_CHUNK = 65536;

function dims(a: tf.TensorInfo, b: tf.TensorInfo, name: string): [number, number] {
  if (
    a.shape.length !== 2 ||
    b.shape.length !== 2 ||
    a.shape[0] !== b.shape[0] ||
    a.shape[1] !== b.shape[1]
  ) {
    throw new Error(
      `${name}: 'a' [${a.shape.join(', ')}] and 'b' [${b.shape.join(', ')}] must both be [B, N]`,
    );
  }
  return [a.shape[0]!, a.shape[1]!];
}

/** Kernel function of `RegkitParzenJoint`: `a`, `b` `[B, N]` → `[B, bins² + 2·bins]`. */
export const parzenJointKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { a, b } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
  const { bins, sigmaRatio, lo, range } = attrs as unknown as RegkitParzenJointAttrs;
  const [B, N] = dims(a, b, RegkitParzenJoint);
  const wasm = wasmKernels();
  // a double histogram per chunk; the arena aligns every buffer to 16 bytes
  const workFloats = Math.ceil(wasm.parzen_work_bytes(bins, B, N) / 4);
  const chunks = B * Math.ceil(N / PARZEN_CHUNK);
  const threads = Math.min(threadsFor(B * N), chunks);
  return runInWasm(
    backend as BackendLike,
    [a, b],
    [[B, bins * bins + 2 * bins]],
    ([pa, pb, out, work]) => {
      runThreaded(
        splitRange(chunks, threads).map(([c0, c1]) => ({
          fn: 'parzen_chunks',
          args: [pa!, pb!, B, N, bins, lo, range, sigmaRatio, work!, c0, c1],
        })),
      );
      wasm.parzen_finish(out!, B, N, bins, work!);
    },
    [workFloats],
  );
};

/** Kernel function of `RegkitParzenJointGrad`: `a`, `b` `[B, N]`, `dy` `[B, bins² + 2·bins]` → `[da, db]`. */
export const parzenJointGradKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { a, b, dy } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo; dy: tf.TensorInfo };
  const { bins, sigmaRatio, lo, range } = attrs as unknown as RegkitParzenJointAttrs;
  const [B, N] = dims(a, b, RegkitParzenJointGrad);
  return runInWasm(
    backend as BackendLike,
    [a, b, dy],
    [
      [B, N],
      [B, N],
    ],
    ([pa, pb, g, da, db]) =>
      runThreaded(
        splitRange(N, threadsFor(B * N)).map(([n0, n1]) => ({
          fn: 'parzen_joint_grad',
          args: [pa!, pb!, g!, da!, db!, B, N, bins, lo, range, sigmaRatio, n0, n1],
        })),
      ),
  );
};

/** The kernel configs of the WebAssembly Parzen histogram and its gradient for one backend. */
export function parzenKernelConfigs(backendName: string): tf.KernelConfig[] {
  return [
    { kernelName: RegkitParzenJoint, backendName, kernelFunc: parzenJointKernelFunc },
    { kernelName: RegkitParzenJointGrad, backendName, kernelFunc: parzenJointGradKernelFunc },
  ];
}
