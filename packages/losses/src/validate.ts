import { assertImage, fail, fmtShape, type tf } from '@regkit/core';

/** Checks two images of equal shape `[B, ...S, C]` and returns the number of spatial axes. */
export function assertImagePair(fn: string, a: unknown, b: unknown): 2 | 3 {
  const nd = assertImage(fn, 'a', a);
  assertImage(fn, 'b', b);
  const ta = a as tf.Tensor;
  const tb = b as tf.Tensor;
  if (ta.shape.length !== tb.shape.length || ta.shape.some((s, i) => s !== tb.shape[i])) {
    fail(fn, `'a' ${fmtShape(ta.shape)} and 'b' ${fmtShape(tb.shape)} must have the same shape`);
  }
  return nd;
}
