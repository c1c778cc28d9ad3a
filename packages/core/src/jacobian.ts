import { tf } from './tf.js';
import { assertField, assertTensor, fail, fmtShape } from './validate.js';

/** Derivative of `x` along `axis`, as `numpy.gradient` (central inside, one-sided at the borders, unit spacing). */
function gradientAlong(x: tf.Tensor, axis: number): tf.Tensor {
  const n = x.shape[axis]!;
  const size = (len: number) => x.shape.map((s, j) => (j === axis ? len : s));
  const begin = (start: number) => x.shape.map((_, j) => (j === axis ? start : 0));
  const slice = (start: number, len: number) => tf.slice(x, begin(start), size(len));
  const first = tf.sub(slice(1, 1), slice(0, 1));
  const last = tf.sub(slice(n - 1, 1), slice(n - 2, 1));
  if (n === 2) return tf.concat([first, last], axis);
  const inner = tf.mul(tf.sub(slice(2, n - 2), slice(0, n - 2)), 0.5);
  return tf.concat([first, inner, last], axis);
}

/**
 * Spatial derivatives of every channel: entry `[b, ...x, i, j] = ∂x_i / ∂axis_j`,
 * central differences inside and one-sided differences at the borders
 * (`numpy.gradient` with `edge_order=1`), in voxel units.
 *
 * @param x `[B, ...S, C]` image or field (every spatial size ≥ 2).
 * @returns `[B, ...S, C, ndim]`.
 */
export function spatialGradient(x: tf.Tensor): tf.Tensor {
  const fn = 'spatialGradient';
  assertTensor(fn, 'x', x);
  const nd = x.rank - 2;
  if (nd !== 2 && nd !== 3)
    fail(fn, `'x' must be [B, H, W, C] or [B, D, H, W, C], got ${fmtShape(x.shape)}`);
  if (x.shape.slice(1, 1 + nd).some((s) => s < 2)) {
    fail(fn, `every spatial size of 'x' must be at least 2, got ${fmtShape(x.shape)}`);
  }
  return tf.tidy(() =>
    tf.stack(
      Array.from({ length: nd }, (_, j) => gradientAlong(x, j + 1)),
      -1,
    ),
  );
}

/**
 * Jacobian determinant of the deformation φ(x) = x + u(x): det(I + ∇u), with ∇
 * from {@link spatialGradient}. Values ≤ 0 mark folding.
 *
 * @param field `[B, ...S, ndim]` displacement (voxels).
 * @returns `[B, ...S]`.
 */
export function jacobianDeterminant(field: tf.Tensor): tf.Tensor {
  const nd = assertField('jacobianDeterminant', 'field', field);
  return tf.tidy(() => {
    const g = spatialGradient(field);
    // J[i][j] = δij + ∂u_i/∂x_j
    const J = (i: number, j: number) => {
      const begin = [...new Array<number>(g.rank - 2).fill(0), i, j];
      const size = [...g.shape.slice(0, g.rank - 2), 1, 1];
      const d = tf.reshape(tf.slice(g, begin, size), g.shape.slice(0, g.rank - 2));
      return i === j ? tf.add(d, 1) : d;
    };
    if (nd === 2) return tf.sub(tf.mul(J(0, 0), J(1, 1)), tf.mul(J(0, 1), J(1, 0)));
    const m = [0, 1, 2].map((i) => [0, 1, 2].map((j) => J(i, j)));
    const a = m as tf.Tensor[][];
    const minor = (r1: number, c1: number, r2: number, c2: number) =>
      tf.sub(tf.mul(a[r1]![c1]!, a[r2]![c2]!), tf.mul(a[r1]![c2]!, a[r2]![c1]!));
    return tf.addN([
      tf.mul(a[0]![0]!, minor(1, 1, 2, 2)),
      tf.neg(tf.mul(a[0]![1]!, minor(1, 0, 2, 2))),
      tf.mul(a[0]![2]!, minor(1, 0, 2, 1)),
    ]);
  });
}
