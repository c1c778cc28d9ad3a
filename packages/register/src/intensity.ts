import { tf, withValues } from '@regkit/core';

/**
 * Rescales intensities to [0, 1] between the given lower and upper percentiles (robust
 * min–max, as needed by the Parzen-window MI), clipping outside. Constant images become 0.
 */
export async function normalizeIntensity(
  image: tf.Tensor,
  lower = 0.5,
  upper = 99.5,
): Promise<tf.Tensor> {
  // one copy of the values (read in place from the backend), reordered by the selection
  const values = withValues(image, (x) => Float32Array.from(x));
  const at = (p: number) =>
    selectKth(values, Math.min(values.length - 1, Math.round((p / 100) * (values.length - 1))));
  const lo = at(lower);
  const hi = at(upper);
  const scale = hi > lo ? 1 / (hi - lo) : 0;
  if (image.dtype !== 'float32') {
    return tf.tidy(() => tf.clipByValue(tf.mul(tf.sub(image, lo), scale), 0, 1));
  }
  // min(max((x − lo)·scale, 0), 1) in float32 arithmetic (each step rounded as tfjs's
  // sub, mul and clip are: the same values), written into the selection's buffer, so the
  // backend allocates only the result (on wasm, a smaller high-water mark of its heap)
  const s32 = Math.fround(scale);
  withValues(image, (x) => {
    for (let i = 0; i < x.length; i++) {
      const v = Math.fround(Math.fround(x[i]! - lo) * s32);
      values[i] = v < 0 ? 0 : v > 1 ? 1 : v;
    }
  });
  return tf.tensor(values, image.shape, 'float32');
}

/**
 * The k-th smallest value (0-based) of `a`, reordering `a` in place: quickselect with a
 * three-way partition, linear on average even when most values are equal (image background).
 */
export function selectKth(a: Float32Array, k: number): number {
  let lo = 0;
  let hi = a.length - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1]!;
    let lt = lo;
    let gt = hi;
    let i = lo;
    while (i <= gt) {
      const v = a[i]!;
      if (v < pivot) {
        a[i] = a[lt]!;
        a[lt++] = v;
        i++;
      } else if (v > pivot) {
        a[i] = a[gt]!;
        a[gt--] = v;
      } else i++;
    }
    if (k < lt) hi = lt - 1;
    else if (k > gt) lo = gt + 1;
    else return pivot;
  }
  return a[k]!;
}
