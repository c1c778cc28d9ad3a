import { tf } from './tf.js';

/**
 * Registers the gradient of the one-input kernel `kernelName` (input `x`) as the kernel
 * `gradKernelName` run on `{ dy, x }` with the forward's attributes (`x` is saved for it).
 */
export function registerGradientKernel(kernelName: string, gradKernelName: string): void {
  tf.registerGradient({
    kernelName,
    inputsToSave: ['x'],
    gradFunc: (dy, saved, attrs) => {
      const [x] = saved as [tf.Tensor];
      return {
        x: () =>
          tf
            .engine()
            .runKernel(
              gradKernelName,
              { dy: dy as tf.Tensor, x },
              attrs as unknown as tf.NamedAttrMap,
            ) as tf.Tensor,
      };
    },
  });
}
