import { tf } from '@regkit/core';

/**
 * Vector–Jacobian product dyᵀ ∂f/∂xs, safe to call inside a `tf.customGrad` gradient
 * function.
 *
 * tfjs computes gradients on one global tape: a `tf.grads` call made while an outer backward
 * pass runs (gradient depth 0) starts a fresh tape and clears the engine's tape when done,
 * so the outer `tf.grads` then fails (or leaks the tensors its tape saved). This runs the
 * inner `tf.grads` and puts the outer tape back. Inside a higher-order gradient (depth > 0)
 * tfjs records the inner products on the outer tape itself, and nothing needs restoring.
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
