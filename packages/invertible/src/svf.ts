import { assertField, type IntegrateVelocityOptions, integrateVelocity, tf } from '@regkit/core';

/**
 * Stationary velocity field exponential exp(v), by scaling and squaring (core's
 * `integrateVelocity`: v / 2^steps, then `steps` self-compositions; default 7 steps): the SVF
 * alternative to {@link invertField} for invertible deformations, for comparison. Its backward
 * pass keeps every squaring step's field (memory grows with `steps`).
 *
 * @param velocity `[B, ...S, ndim]` stationary velocity (voxels).
 * @returns `[B, ...S, ndim]` displacement of exp(v).
 */
export function expVelocity(
  velocity: tf.Tensor,
  options: IntegrateVelocityOptions = {},
): tf.Tensor {
  return integrateVelocity(velocity, options);
}

/**
 * The velocity of the inverse SVF deformation: exp(−v) = exp(v)⁻¹, so
 * `expVelocity(invertVelocity(v))` ≈ `invertField(expVelocity(v))` (up to sampling errors).
 *
 * @param velocity `[B, ...S, ndim]` stationary velocity (voxels).
 * @returns `[B, ...S, ndim]`, −v.
 */
export function invertVelocity(velocity: tf.Tensor): tf.Tensor {
  assertField('invertVelocity', 'velocity', velocity);
  return tf.neg(velocity);
}
