import { assertField, tf } from '@regkit/core';

/**
 * The velocity of the inverse SVF deformation: exp(−v) = exp(v)⁻¹, so with core's
 * `integrateVelocity` (exp by scaling and squaring, the SVF alternative to invertField),
 * `integrateVelocity(invertVelocity(v))` ≈ `invertField(integrateVelocity(v))` (up to sampling
 * errors).
 *
 * @param velocity `[B, ...S, ndim]` stationary velocity (voxels).
 * @returns `[B, ...S, ndim]`, −v.
 */
export function invertVelocity(velocity: tf.Tensor): tf.Tensor {
  assertField('invertVelocity', 'velocity', velocity);
  return tf.neg(velocity);
}
