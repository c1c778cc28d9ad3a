import { assertImage, fail, fmtShape, type tf } from '@regkit/core';

/** Checks two label maps of equal shape `[B, ...S, 1]` (or `[B, ...S, C]`) and returns ndim. */
export function assertLabelPair(fn: string, a: unknown, b: unknown): 2 | 3 {
  const nd = assertImage(fn, 'a', a);
  assertImage(fn, 'b', b);
  const ta = a as tf.Tensor;
  const tb = b as tf.Tensor;
  if (ta.shape.length !== tb.shape.length || ta.shape.some((s, i) => s !== tb.shape[i])) {
    fail(fn, `'a' ${fmtShape(ta.shape)} and 'b' ${fmtShape(tb.shape)} must have the same shape`);
  }
  return nd;
}

/** Sorted distinct values of both maps (the labels present in either). */
export function labelsPresent(a: ArrayLike<number>, b: ArrayLike<number>): number[] {
  const set = new Set<number>();
  for (let i = 0; i < a.length; i++) set.add(a[i]!);
  for (let i = 0; i < b.length; i++) set.add(b[i]!);
  return [...set].sort((x, y) => x - y);
}
