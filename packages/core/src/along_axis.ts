import { tf } from './tf.js';

/**
 * Applies `rows`, an op along axis 0 of a 2D tensor `[n, m]` that keeps its shape, along `axis`
 * of `x`: the axis is moved to the front first, since slices across inner axes are slow on the
 * stock cpu backend and contiguous ones are not (no transpose when the leading axes are 1).
 */
export function alongAxis(
  x: tf.Tensor,
  axis: number,
  rows: (t: tf.Tensor) => tf.Tensor,
): tf.Tensor {
  const n = x.shape[axis]!;
  if (x.shape.slice(0, axis).every((s) => s === 1)) {
    return tf.reshape(rows(tf.reshape(x, [n, -1])), x.shape);
  }
  const perm = [axis, ...x.shape.map((_, i) => i).filter((i) => i !== axis)];
  const moved = tf.transpose(x, perm);
  const d = tf.reshape(rows(tf.reshape(moved, [n, -1])), moved.shape);
  return tf.transpose(
    d,
    perm.map((_, i) => perm.indexOf(i)),
  );
}
