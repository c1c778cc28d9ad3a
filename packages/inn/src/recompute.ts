import { tf, vjp } from '@regkit/core';
import type { InvertibleModule, InvertibleOutput } from './types.js';

/** output and log-determinant packed in one `[B, n + 1]` tensor (a custom gradient has one output). */
function pack(r: InvertibleOutput): tf.Tensor2D {
  const b = r.output.shape[0]!;
  return tf.concat([tf.reshape(r.output, [b, -1]), tf.reshape(r.logDeterminant, [b, 1])], 1);
}

/**
 * `block.forward(x)` (or `block.inverse(x)`) whose backward pass keeps only the block's
 * output, not its internal activations: the gradient recomputes the block's input with the
 * exact inverse (the other direction), re-runs the block under a local tape and returns the
 * vector–Jacobian products for the input and every trainable weight (the memory-saving
 * back-propagation of reversible networks, Gomez et al. 2017). The input is recovered to
 * float rounding, so gradients differ from plain back-propagation by about as much.
 */
export function runRecomputed(
  block: InvertibleModule,
  x: tf.Tensor,
  direction: 'forward' | 'inverse',
): InvertibleOutput {
  const run = (t: tf.Tensor) => (direction === 'forward' ? block.forward(t) : block.inverse(t));
  const back = (t: tf.Tensor) => (direction === 'forward' ? block.inverse(t) : block.forward(t));
  const variables = block.trainableVariables;
  const shapeOf = { value: x.shape };
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const input = args[0] as tf.Tensor;
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const r = run(input);
    shapeOf.value = r.output.shape;
    save([r.output]);
    return {
      value: pack(r),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const recovered = tf.tidy(() => back(saved[0]!).output);
        const grads = vjp((t: tf.Tensor) => pack(run(t)), [recovered, ...variables], dy);
        recovered.dispose();
        return grads;
      },
    };
  });
  return tf.tidy(() => {
    const packed = op(x, ...variables) as tf.Tensor2D;
    const [b, n1] = packed.shape;
    return {
      output: tf.reshape(tf.slice(packed, [0, 0], [b, n1 - 1]), shapeOf.value),
      logDeterminant: tf.reshape(tf.slice(packed, [0, n1 - 1], [b, 1]), [b]) as tf.Tensor1D,
    };
  });
}
