/**
 * tfjs's `LeakyRelu` and the gradient contract `RegkitLeakyReluGrad` of `@regkit/core` for
 * the tfjs cpu and wasm backends, running `csrc/elementwise.c` (WebAssembly SIMD, branchless)
 * on worker threads over element ranges: every value is computed alone, so results are
 * bit-identical at any thread count and to tfjs's (x > 0 ? x : alpha·x, in float32).
 */
import { RegkitLeakyReluGrad, type RegkitLeakyReluGradAttrs, type tf } from '@regkit/core';
import { type BackendLike, size } from './backend_io.js';
import { configWithFallback, type Impl } from './fallback.js';
import { runThreaded } from './loader.js';
import { runInWasm, threadsFor } from './run_in_wasm.js';
import { splitRange } from './threads.js';

/** Element-range calls of `fn` (pointers first, alpha, then the range) for the threads. */
function elementCalls(fn: string, pointers: number[], alpha: number, n: number) {
  return splitRange(n, threadsFor(n), 4).map(([i0, i1]) => ({
    fn,
    args: [...pointers, alpha, i0, i1],
  }));
}

/** `LeakyRelu` (x → y, attrs alpha): float32 here, other dtypes by the kernel registered before. */
const leakyRelu: Impl = ({ inputs, backend, attrs }, fallback) => {
  const { x } = inputs as { x: tf.TensorInfo };
  if (x.dtype !== 'float32') return fallback();
  const { alpha } = attrs as unknown as { alpha: number };
  const n = size(x.shape);
  return runInWasm(backend as BackendLike, [x], [[...x.shape]], ([px, py]) => {
    runThreaded(elementCalls('leaky_relu', [px!, py!], alpha, n));
  })[0]!;
};

/** Kernel function of `RegkitLeakyReluGrad`: (dy, x) → dx = x > 0 ? dy : alpha·dy. */
export const leakyReluGradKernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, x } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo };
  const { alpha } = attrs as unknown as RegkitLeakyReluGradAttrs;
  if (dy.shape.join() !== x.shape.join() || dy.dtype !== 'float32' || x.dtype !== 'float32') {
    throw new Error(
      `${RegkitLeakyReluGrad}: 'dy' and 'x' must be float32 of one shape, got ${dy.dtype} [${dy.shape.join(', ')}] and ${x.dtype} [${x.shape.join(', ')}]`,
    );
  }
  const n = size(x.shape);
  return runInWasm(backend as BackendLike, [dy, x], [[...x.shape]], ([pdy, px, pdx]) => {
    runThreaded(elementCalls('leaky_relu_grad', [pdy!, px!, pdx!], alpha, n));
  })[0]!;
};

/**
 * The kernel configs of one backend: `LeakyRelu` (falling back to the kernel registered
 * before for other dtypes) and `RegkitLeakyReluGrad`.
 */
export function activationKernelConfigs(backendName: string): tf.KernelConfig[] {
  return [
    configWithFallback('LeakyRelu', backendName, leakyRelu),
    { kernelName: RegkitLeakyReluGrad, backendName, kernelFunc: leakyReluGradKernelFunc },
  ];
}
