import { jsBoxSumKernel } from './box_sum.js';
import { jsMaxPoolKernels } from './max_pool.js';
import { jsResizeKernels } from './resize_kernel_js.js';
import { tf } from './tf.js';
import { jsUpsampleKernels } from './upsample.js';
import { jsWarpKernels } from './warp_kernel_js.js';

/**
 * Registers core's plain-JavaScript kernels (`RegkitWarp`, `RegkitWarpGrad`, `RegkitWarpImageGrad`, `RegkitWarpFieldGrad`, `RegkitBoxSum`, `RegkitUpsampleNearest(Grad)`,
 * `RegkitMaxPool(Grad)`, `RegkitResizeLinear(Grad)`) for the
 * cpu and wasm backends, unless a kernel of that name is already registered there
 * (e.g. by `@regkit/kernels`, whose WebAssembly-SIMD versions then stay in use).
 * Runs on import of `@regkit/core`; idempotent.
 */
export function registerJsKernels(): void {
  for (const backendName of ['cpu', 'wasm']) {
    for (const config of [
      ...jsWarpKernels(backendName),
      jsBoxSumKernel(backendName),
      ...jsUpsampleKernels(backendName),
      ...jsMaxPoolKernels(backendName),
      ...jsResizeKernels(backendName),
    ]) {
      if (!tf.getKernel(config.kernelName, backendName)) tf.registerKernel(config);
    }
  }
}
