/**
 * Registers the gradients of every stock tfjs-core kernel.
 *
 * tfjs-core's Node (CommonJS) entry point does not register gradients, and its
 * ESM file `dist/register_all_gradients.js` cannot be imported by Node directly
 * (extensionless relative imports). The build inlines that module (see
 * `tsup.config.ts`); it registers into tfjs's global gradient registry, which
 * every copy of tfjs-core shares, so `tf.grad` works for all stock ops.
 */
import '@tensorflow/tfjs-core/dist/register_all_gradients';
// Chained ops (`t.reshape(...)`, `t.add(...)`), also missing from the Node entry point.
import '@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops';

import { RegkitLeakyReluGrad } from './kernel_names.js';
import { tf } from './tf.js';
import { hasKernels } from './warp.js';

/**
 * The gradients of `Sum` and `Mean` as tfjs-core's (dy reshaped to keep the reduced axes,
 * times ones of x's shape; Mean then divided by the reduced size), with the ones made by the
 * backend's `Fill` kernel instead of `tf.ones`, whose JavaScript loop fills a new array and
 * copies it into the backend: on wasm at 96×112×96 that was ≈ 17 ms of a loss's backward
 * pass, serial, against ≈ 0.3 ms. Same values bit for bit (x · 1 = x). Registered after
 * tfjs's own, so these replace them.
 */
function expandedDy(dy: tf.Tensor, x: tf.Tensor, axis: number | number[] | null): tf.Tensor {
  // axis null (all axes) is what tf.sum and tf.mean record by default: parseAxisParam takes it
  const axes = tf.util.parseAxisParam(axis as number | number[], x.shape);
  const shape = x.shape.slice();
  for (const a of axes) shape[a] = 1;
  return tf.reshape(dy, shape);
}

/** `Sum`'s gradient: dL/dx = broadcast(dy) (see above). */
export const sumGradConfig: tf.GradConfig = {
  kernelName: 'Sum',
  inputsToSave: ['x'],
  gradFunc: (dy, saved, attrs) => {
    const [x] = saved as [tf.Tensor];
    const { axis } = attrs as unknown as { axis: number | number[] | null };
    const derX = tf.mul(expandedDy(dy as tf.Tensor, x, axis), tf.fill(x.shape, 1, 'float32'));
    return { x: () => derX };
  },
};

/** `Mean`'s gradient: dL/dx = broadcast(dy) / n, n the number of values averaged. */
export const meanGradConfig: tf.GradConfig = {
  kernelName: 'Mean',
  inputsToSave: ['x'],
  gradFunc: (dy, saved, attrs) => {
    const [x] = saved as [tf.Tensor];
    const { axis } = attrs as unknown as { axis: number | number[] | null };
    const axes = tf.util.parseAxisParam(axis as number | number[], x.shape);
    const reduceSize = axes.reduce((n, a) => n * x.shape[a]!, 1);
    return {
      x: () =>
        tf.div(
          tf.mul(expandedDy(dy as tf.Tensor, x, axis), tf.fill(x.shape, 1, 'float32')),
          reduceSize,
        ),
    };
  },
};

/**
 * `LeakyRelu`'s gradient: dL/dx = x > 0 ? dy : alpha·dy. tfjs's is three kernels
 * (greater, mul, select: ≈ 314 CPU-ms at [1, 96, 112, 96, 16] on wasm, three times its
 * forward); where a `RegkitLeakyReluGrad` kernel is registered (`@regkit/kernels` on cpu
 * and wasm) it is that one pass, same values bit for bit, else tfjs's ops.
 */
export const leakyReluGradConfig: tf.GradConfig = {
  kernelName: 'LeakyRelu',
  inputsToSave: ['x'],
  gradFunc: (dy, saved, attrs) => {
    const [x] = saved as [tf.Tensor];
    const { alpha } = attrs as unknown as { alpha: number };
    return {
      x: () =>
        x.dtype === 'float32' && hasKernels(RegkitLeakyReluGrad)
          ? (tf.engine().runKernel(RegkitLeakyReluGrad, { dy: dy as tf.Tensor, x }, {
              alpha,
            } as unknown as tf.NamedAttrMap) as tf.Tensor)
          : tf.where(tf.greater(x, 0), dy as tf.Tensor, tf.mul(dy as tf.Tensor, alpha)),
    };
  },
};

tf.registerGradient(sumGradConfig);
tf.registerGradient(meanGradConfig);
tf.registerGradient(leakyReluGradConfig);
