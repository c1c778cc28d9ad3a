import { assertImagePair, tf } from '@regkit/core';

/**
 * Mean squared error: mean((a − b)²) over every element (batch, voxels, channels).
 *
 * @param a `[B, ...S, C]`.
 * @param b same shape as `a`.
 * @returns scalar to minimise.
 */
export function mseLoss(a: tf.Tensor, b: tf.Tensor): tf.Scalar {
  assertImagePair('mseLoss', a, b);
  return tf.tidy(() => tf.mean(tf.squaredDifference(a, b)));
}

/**
 * Mean absolute error: mean(|a − b|) over every element.
 *
 * @param a `[B, ...S, C]`.
 * @param b same shape as `a`.
 * @returns scalar to minimise.
 */
export function l1Loss(a: tf.Tensor, b: tf.Tensor): tf.Scalar {
  assertImagePair('l1Loss', a, b);
  return tf.tidy(() => tf.mean(tf.abs(tf.sub(a, b))));
}

/**
 * Root mean squared error, sqrt(mean((a − b)²)) (FIRE's RMS synthesis loss).
 *
 * @param a `[B, ...S, C]`.
 * @param b same shape as `a`.
 * @returns scalar to minimise.
 */
export function rmsLoss(a: tf.Tensor, b: tf.Tensor): tf.Scalar {
  assertImagePair('rmsLoss', a, b);
  return tf.tidy(() => tf.sqrt(tf.mean(tf.squaredDifference(a, b))) as tf.Scalar);
}
