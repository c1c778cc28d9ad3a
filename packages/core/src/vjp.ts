import { tf } from './tf.js';

/**
 * Vector–Jacobian product of `f` at `xs` with cotangent `dy`: dyᵀ ∂f/∂xs, one gradient per
 * input, safe to call inside a `tf.customGrad` gradient function.
 *
 * tfjs computes gradients on one global tape: a `tf.grads` call made while an outer backward
 * pass runs (gradient depth 0) starts a fresh tape and clears the engine's tape when done, so
 * the outer `tf.grads` then fails (or leaks the tensors its tape saved). This runs the inner
 * `tf.grads` and puts the outer tape back. Inside a higher-order gradient (depth > 0) tfjs
 * records the inner products on the outer tape itself, and nothing needs restoring.
 *
 * Like `tf.grads`, it disposes the intermediates of `f` and returns only the gradients (new
 * tensors the caller owns); `xs` and `dy` are left as they are.
 *
 * @param f a function of the tensors `xs` returning one tensor `y`.
 * @param xs the point: tensors of any shapes (variables included).
 * @param dy cotangent, the shape of `y = f(...xs)`.
 * @returns the gradients, `[i]` with the shape of `xs[i]`.
 */
export function vjp(
  f: (...xs: tf.Tensor[]) => tf.Tensor,
  xs: tf.Tensor[],
  dy: tf.Tensor,
): tf.Tensor[] {
  const state = tf.engine().state;
  if (state.gradientDepth > 0) return tf.grads(f)(xs, dy);
  const outer = state.activeTape;
  try {
    return tf.grads(f)(xs, dy);
  } finally {
    state.activeTape = outer;
  }
}
