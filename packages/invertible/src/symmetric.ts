import { assertField, assertTensor, composeFields, fail, fmtShape, tf } from '@regkit/core';
import { type InvertFieldOptions, invertField, resolveInvertOptions } from './invert.js';

/** A deformation and its inverse, as displacement fields `[B, ...S, ndim]` (voxels). */
export interface DeformationPair {
  /** φ: x ↦ x + forward(x). */
  forward: tf.Tensor;
  /** φ⁻¹: x ↦ x + inverse(x). */
  inverse: tf.Tensor;
}

/**
 * SITReg's symmetric formulation (eq. 2–3, 5): from an auxiliary network A that predicts an
 * invertible deformation for an ordered pair of inputs,
 *
 *   forward = A(a, b) ∘ A(b, a)⁻¹,   inverse = A(b, a) ∘ A(a, b)⁻¹,
 *
 * composed with `composeFields` (outer ∘ inner) and inverted with {@link invertField}. Swapping
 * the inputs swaps `forward` and `inverse` exactly (the same operations run in the same order),
 * and forward ∘ inverse = identity up to the inversion tolerance and resampling. In SITReg's
 * multi-resolution architecture `forward` is the update applied to the half-way deformation of
 * the first image and `inverse` the one of the second. Differentiable in everything `net`
 * depends on (through `invertField`'s implicit gradient).
 *
 * @param net `(a, b) => [B, ...S, ndim]` displacement, e.g. a CNN on the features followed by
 *   {@link boundedCubicSplineDeformation} so its output is invertible. Called twice.
 * @param featuresA `[B, ...]` features of the first image (any tensor `net` accepts).
 * @param featuresB features of the second image, the shape of `featuresA`.
 * @param options passed to both inversions.
 * @returns `{ forward, inverse }`, each `[B, ...S, ndim]`.
 */
export function symmetricUpdate(
  net: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor,
  featuresA: tf.Tensor,
  featuresB: tf.Tensor,
  options: InvertFieldOptions = {},
): DeformationPair {
  const fn = 'symmetricUpdate';
  if (typeof net !== 'function') fail(fn, `'net' must be a function, got ${typeof net}`);
  assertTensor(fn, 'featuresA', featuresA);
  assertTensor(fn, 'featuresB', featuresB);
  if (!tf.util.arraysEqual(featuresA.shape, featuresB.shape)) {
    fail(
      fn,
      `'featuresA' ${fmtShape(featuresA.shape)} and 'featuresB' ${fmtShape(featuresB.shape)} must have the same shape`,
    );
  }
  resolveInvertOptions(fn, options);
  return tf.tidy(() => {
    const ab = net(featuresA, featuresB);
    assertField(fn, 'net(a, b)', ab);
    const ba = net(featuresB, featuresA);
    assertField(fn, 'net(b, a)', ba);
    if (!tf.util.arraysEqual(ab.shape, ba.shape)) {
      fail(
        fn,
        `'net(a, b)' ${fmtShape(ab.shape)} and 'net(b, a)' ${fmtShape(ba.shape)} must have the same shape`,
      );
    }
    const forward = composeFields(ab, invertField(ba, options));
    const inverse = composeFields(ba, invertField(ab, options));
    return { forward, inverse };
  });
}
