import { tf } from './tf.js';
import { assertSpatialShape, assertTensor, fail, fmtShape } from './validate.js';

/**
 * The identity grid: voxel coordinates `[i, j]` or `[i, j, k]` (axis order) of every voxel.
 *
 * @param spatialShape `[H, W]` or `[D, H, W]`.
 * @returns `[1, ...spatialShape, ndim]` float32, entry `[0, ...x, k] = x_k`.
 */
export function identityGrid(spatialShape: readonly number[]): tf.Tensor {
  const nd = assertSpatialShape('identityGrid', 'spatialShape', spatialShape);
  return tf.tidy(() => {
    const comps = Array.from({ length: nd }, (_, k) => {
      const shape = spatialShape.map((s, j) => (j === k ? s : 1));
      return tf.broadcastTo(tf.reshape(tf.range(0, spatialShape[k]!, 1, 'float32'), shape), [
        ...spatialShape,
      ]);
    });
    return tf.expandDims(tf.stack(comps, -1), 0);
  });
}

/**
 * Dense displacement of an affine map in voxel coordinates about the image centre:
 * with c = (S − 1) / 2 and matrix = [A | t], y = A (x − c) + t + c and
 * u(x) = y − x = (A − I)(x − c) + t. The identity `[I | 0]` gives a zero field.
 * Differentiable with respect to `matrix`.
 *
 * @param matrix `[B, ndim, ndim + 1]` (Tensor or nested arrays), rows and columns in axis order, t in voxels.
 * @param spatialShape `[H, W]` or `[D, H, W]`.
 * @returns `[B, ...spatialShape, ndim]`.
 */
export function affineField(
  matrix: tf.Tensor | number[][][],
  spatialShape: readonly number[],
): tf.Tensor {
  const fn = 'affineField';
  const nd = assertSpatialShape(fn, 'spatialShape', spatialShape);
  const m = Array.isArray(matrix) ? tf.tensor3d(matrix) : matrix;
  assertTensor(fn, 'matrix', m);
  if (m.rank !== 3 || m.shape[1] !== nd || m.shape[2] !== nd + 1) {
    fail(
      fn,
      `'matrix' must be [B, ${nd}, ${nd + 1}] for ${nd}D spatial shape, got ${fmtShape(m.shape)}`,
    );
  }
  const out = tf.tidy(() => {
    const batch = m.shape[0]!;
    const n = spatialShape.reduce((a, b) => a * b, 1);
    const centre = tf.tensor1d(spatialShape.map((s) => (s - 1) / 2));
    const x = tf.sub(tf.reshape(identityGrid(spatialShape), [1, n, nd]), centre); // [1, N, nd]
    const a = tf.slice(m, [0, 0, 0], [batch, nd, nd]);
    const t = tf.slice(m, [0, 0, nd], [batch, nd, 1]);
    const aMinusI = tf.sub(a, tf.eye(nd));
    // u[b, n, i] = sum_j x[n, j] (A - I)[b, i, j] + t[b, i]
    const u = tf.add(
      tf.matMul(tf.broadcastTo(x, [batch, n, nd]), aMinusI, false, true),
      tf.transpose(t, [0, 2, 1]),
    );
    return tf.reshape(u, [batch, ...spatialShape, nd]);
  });
  if (m !== matrix) m.dispose();
  return out;
}
