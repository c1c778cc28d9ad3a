import { alongAxis } from './along_axis.js';
import { RegkitJacobianDet, RegkitJacobianDetGrad } from './kernel_names.js';
import { tf } from './tf.js';
import { assertField, assertTensor, fail, fmtShape } from './validate.js';
import { hasKernels } from './warp.js';

tf.registerGradient({
  kernelName: RegkitJacobianDet,
  inputsToSave: ['field'],
  gradFunc: (dy, saved) => {
    const [field] = saved as [tf.Tensor];
    const dField = tf
      .engine()
      .runKernel(RegkitJacobianDetGrad, { dy: dy as tf.Tensor, field }) as tf.Tensor;
    return { field: () => dField };
  },
});

/** numpy.gradient along axis 0 of a 2D tensor `[n, m]` (contiguous slices only). */
function gradientRows(x: tf.Tensor): tf.Tensor {
  const [n, m] = x.shape as [number, number];
  const rows = (start: number, len: number) => tf.slice(x, [start, 0], [len, m]);
  const first = tf.sub(rows(1, 1), rows(0, 1));
  const last = tf.sub(rows(n - 1, 1), rows(n - 2, 1));
  if (n === 2) return tf.concat([first, last], 0);
  return tf.concat([first, tf.mul(tf.sub(rows(2, n - 2), rows(0, n - 2)), 0.5), last], 0);
}

/** Derivative of `x` along `axis`, as `numpy.gradient` (central inside, one-sided at the borders, unit spacing). */
function gradientAlong(x: tf.Tensor, axis: number): tf.Tensor {
  return alongAxis(x, axis, gradientRows);
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
 * from {@link spatialGradient}. Values ≤ 0 mark folding. Differentiable. Runs the
 * `RegkitJacobianDet` kernel of the current backend when one is registered (WebAssembly
 * with `@regkit/kernels`), else a composite of stock tfjs ops.
 *
 * @param field `[B, ...S, ndim]` displacement (voxels).
 * @returns `[B, ...S]`.
 */
export function jacobianDeterminant(field: tf.Tensor): tf.Tensor {
  const nd = assertField('jacobianDeterminant', 'field', field);
  if (field.shape.slice(1, 1 + nd).some((s) => s < 2)) {
    fail(
      'jacobianDeterminant',
      `every spatial size of 'field' must be at least 2, got ${fmtShape(field.shape)}`,
    );
  }
  return tf.tidy(() => {
    if (hasKernels(RegkitJacobianDet, RegkitJacobianDetGrad)) {
      const u = field.dtype === 'float32' ? field : tf.cast(field, 'float32');
      return tf.engine().runKernel(RegkitJacobianDet, { field: u }) as tf.Tensor;
    }
    const spatial = field.shape.slice(0, nd + 1);
    const n = spatial.reduce((p, q) => p * q, 1);
    // components as contiguous tensors [B, ...S] (slicing the last axis is slow on wasm)
    const components = (t: tf.Tensor) =>
      tf
        .unstack(tf.transpose(tf.reshape(t, [n, nd]), [1, 0]), 0)
        .map((c) => tf.reshape(c, spatial));
    // derivs[j][i] = ∂u_i/∂x_j; J[i][j] = δij + ∂u_i/∂x_j
    const derivs = Array.from({ length: nd }, (_, j) => components(gradientAlong(field, j + 1)));
    const a = Array.from({ length: nd }, (_, i) =>
      Array.from({ length: nd }, (_, j) => (i === j ? tf.add(derivs[j]![i]!, 1) : derivs[j]![i]!)),
    );
    const m = (i: number, j: number) => a[i]![j]!;
    if (nd === 2) return tf.sub(tf.mul(m(0, 0), m(1, 1)), tf.mul(m(0, 1), m(1, 0)));
    const minor = (r1: number, c1: number, r2: number, c2: number) =>
      tf.sub(tf.mul(m(r1, c1), m(r2, c2)), tf.mul(m(r1, c2), m(r2, c1)));
    return tf.addN([
      tf.mul(m(0, 0), minor(1, 1, 2, 2)),
      tf.neg(tf.mul(m(0, 1), minor(1, 0, 2, 2))),
      tf.mul(m(0, 2), minor(1, 0, 2, 1)),
    ]);
  });
}
