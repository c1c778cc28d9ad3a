import { tf } from './tf.js';
import { assertSpatialShape, assertTensor, fail, fmtShape, perAxis } from './validate.js';

/** Cubic B-spline kernel: 2/3 − t² + |t|³/2 for |t| < 1, (2 − |t|)³/6 for 1 ≤ |t| < 2, else 0. */
export function cubicBSpline(t: number): number {
  const a = Math.abs(t);
  if (a < 1) return 2 / 3 - a * a + (a * a * a) / 2;
  if (a < 2) return (2 - a) ** 3 / 6;
  return 0;
}

/** Options of {@link cubicBSplineField}. */
export interface CubicBSplineOptions {
  /** Control-point spacing in voxels, per axis or one value. Default (S − 1)/(G − 3): the grid covers the image with one extra control point beyond each border. */
  spacing?: number | readonly number[];
  /** Voxel position of control point 0, per axis or one value. Default −spacing. */
  origin?: number | readonly number[];
}

/**
 * Dense field from a cubic B-spline control grid (free-form deformation):
 *
 *   u(x) = Σ_j c_j Π_k β₃((x_k − origin_k)/spacing_k − j_k),
 *
 * evaluated separably (one small matrix product per axis). Any channel count works;
 * for a displacement use C = ndim. Linear, hence differentiable in the control points.
 *
 * @param controlPoints `[B, ...G, C]` control values.
 * @param spatialShape output `[H, W]` or `[D, H, W]`.
 * @returns `[B, ...spatialShape, C]`.
 */
export function cubicBSplineField(
  controlPoints: tf.Tensor,
  spatialShape: readonly number[],
  options: CubicBSplineOptions = {},
): tf.Tensor {
  const fn = 'cubicBSplineField';
  assertTensor(fn, 'controlPoints', controlPoints);
  const nd = assertSpatialShape(fn, 'spatialShape', spatialShape);
  if (controlPoints.rank !== nd + 2) {
    fail(
      fn,
      `'controlPoints' must be [B, ...G, C] with ${nd} grid axes, got ${fmtShape(controlPoints.shape)}`,
    );
  }
  const grid = controlPoints.shape.slice(1, 1 + nd);
  if (options.spacing === undefined && grid.some((g) => g < 4)) {
    fail(
      fn,
      `the default spacing needs at least 4 control points per axis, got grid ${fmtShape(grid)}`,
    );
  }
  const spacing = perAxis(
    fn,
    'spacing',
    options.spacing ?? spatialShape.map((s, k) => (s - 1) / (grid[k]! - 3)),
    nd,
  );
  if (spacing.some((s) => !(s > 0)))
    fail(fn, `'spacing' must be > 0, got ${JSON.stringify(spacing)}`);
  const origin = perAxis(fn, 'origin', options.origin ?? spacing.map((s) => -s), nd);
  return tf.tidy(() => {
    let y = controlPoints.dtype === 'float32' ? controlPoints : tf.cast(controlPoints, 'float32');
    for (let k = 0; k < nd; k++) {
      const s = spatialShape[k]!;
      const g = grid[k]!;
      const w = new Float32Array(g * s); // [G, S]
      for (let j = 0; j < g; j++) {
        for (let x = 0; x < s; x++) w[j * s + x] = cubicBSpline((x - origin[k]!) / spacing[k]! - j);
      }
      const axis = k + 1;
      const perm = y.shape.map((_, i) => i).filter((i) => i !== axis);
      perm.push(axis);
      const moved = tf.transpose(y, perm);
      const lead = moved.shape.slice(0, -1);
      const prod = tf.matMul(tf.reshape(moved, [-1, g]), tf.tensor2d(w, [g, s]));
      const inv = perm.map((_, i) => perm.indexOf(i));
      y = tf.transpose(tf.reshape(prod, [...lead, s]), inv);
    }
    return y;
  });
}
