import { assertField, composeFields, fail, fmtShape, jacobianDeterminant, tf } from '@regkit/core';

function sliceAxis(x: tf.Tensor, axis: number, start: number, length: number): tf.Tensor {
  const begin = x.shape.map((_, i) => (i === axis ? start : 0));
  const size = x.shape.map((s, i) => (i === axis ? length : s));
  return tf.slice(x, begin, size);
}

/**
 * Diffusion regulariser (VoxelMorph `Grad('l2')`, SITReg): the mean over spatial axes of
 * the mean squared forward difference, (1/ndim) Σ_k mean((u(x + e_k) − u(x))²).
 *
 * @param field `[B, ...S, ndim]` displacement or velocity (voxels).
 * @returns scalar to minimise.
 */
export function diffusionLoss(field: tf.Tensor): tf.Scalar {
  const nd = assertField('diffusionLoss', 'field', field);
  return tf.tidy(() => {
    const terms = Array.from({ length: nd }, (_, k) => {
      const n = field.shape[k + 1]!;
      return tf.mean(
        tf.square(tf.sub(sliceAxis(field, k + 1, 1, n - 1), sliceAxis(field, k + 1, 0, n - 1))),
      );
    });
    return tf.div(tf.addN(terms), nd);
  });
}

/**
 * MONAI's `spatial_gradient`: central difference (x[i+1] − x[i−1])/2 along `axis`,
 * cropping one voxel at both ends of every spatial axis.
 */
function centralDifference(x: tf.Tensor, axis: number, nd: number): tf.Tensor {
  const begin: number[] = x.shape.map((_, i) => (i >= 1 && i <= nd ? 1 : 0));
  const size = x.shape.map((s, i) => (i >= 1 && i <= nd ? s - 2 : s));
  const lo = [...begin];
  const hi = [...begin];
  lo[axis] = 0;
  hi[axis] = 2;
  return tf.mul(tf.sub(tf.slice(x, hi, size), tf.slice(x, lo, size)), 0.5);
}

/**
 * Bending energy (MONAI `BendingEnergyLoss`, normalize=False): with D_k the central
 * difference of MONAI's `spatial_gradient`,
 *   mean( Σ_k (D_k D_k u)² + 2 Σ_{k<l} (D_l D_k u)² )
 * over batch, the interior voxels (2 voxels cropped at every border) and components.
 *
 * @param field `[B, ...S, ndim]` with every spatial size ≥ 5.
 * @returns scalar to minimise.
 */
export function bendingEnergyLoss(field: tf.Tensor): tf.Scalar {
  const fn = 'bendingEnergyLoss';
  const nd = assertField(fn, 'field', field);
  if (field.shape.slice(1, 1 + nd).some((s) => s < 5)) {
    fail(fn, `every spatial size of 'field' must be at least 5, got ${fmtShape(field.shape)}`);
  }
  return tf.tidy(() => {
    const first = Array.from({ length: nd }, (_, k) => centralDifference(field, k + 1, nd));
    const terms: tf.Tensor[] = [];
    for (let k = 0; k < nd; k++) {
      terms.push(tf.square(centralDifference(first[k]!, k + 1, nd)));
      for (let l = k + 1; l < nd; l++)
        terms.push(tf.mul(tf.square(centralDifference(first[k]!, l + 1, nd)), 2));
    }
    return tf.mean(tf.addN(terms));
  });
}

/**
 * Inverse-consistency loss of a pair of deformations that should be inverses:
 *   mean_x |composeFields(forward, backward)(x)|² + mean_x |composeFields(backward, forward)(x)|²
 * (squared Euclidean norm over components, mean over batch and voxels; 0 for exact inverses).
 *
 * @param forward `[B, ...S, ndim]` displacement.
 * @param backward same shape: the displacement meant to invert `forward`.
 * @returns scalar to minimise.
 */
export function inverseConsistencyLoss(forward: tf.Tensor, backward: tf.Tensor): tf.Scalar {
  const fn = 'inverseConsistencyLoss';
  assertField(fn, 'forward', forward);
  assertField(fn, 'backward', backward);
  return tf.tidy(() => {
    const sq = (u: tf.Tensor) => tf.mean(tf.sum(tf.square(u), -1));
    return tf.add(sq(composeFields(forward, backward)), sq(composeFields(backward, forward)));
  });
}

/** Options of {@link jacobianFoldingLoss}. */
export interface JacobianFoldingOptions {
  /** Determinants below this value are penalised (default 0: only folding). */
  epsilon?: number;
}

/**
 * Folding penalty: mean over batch and voxels of max(0, ε − det(I + ∇u)), with the
 * Jacobian determinant of core's `jacobianDeterminant` (central differences inside,
 * one-sided at borders). 0 for every fold-free field when ε = 0.
 *
 * @param field `[B, ...S, ndim]` displacement.
 * @returns scalar to minimise.
 */
export function jacobianFoldingLoss(
  field: tf.Tensor,
  options: JacobianFoldingOptions = {},
): tf.Scalar {
  const epsilon = options.epsilon ?? 0;
  if (!Number.isFinite(epsilon))
    fail('jacobianFoldingLoss', `'epsilon' must be finite, got ${epsilon}`);
  return tf.tidy(() => tf.mean(tf.relu(tf.sub(epsilon, jacobianDeterminant(field)))));
}

/** Options of {@link velocityKlLoss}. */
export interface VelocityKlOptions {
  /** λ, the precision scale of the smoothness prior (default 10, as Snaauw et al. and Dalca et al.). */
  priorLambda?: number;
}

/**
 * KL regulariser of probabilistic (diffeomorphic) VoxelMorph (Dalca et al. 2019, `vxm.losses.KL`):
 * KL(N(μ, diag σ²) ‖ N(0, Λ⁻¹)) up to constants, with the Laplacian prior Λ = λ(D − A) of the
 * grid graph (D the number of axis neighbours of each voxel inside the image, A adjacency):
 *
 *   ½·ndim·( mean(λ D σ² − log σ²) + λ · ½ (1/ndim) Σ_k mean((μ(x + e_k) − μ(x))²) ),
 *
 * means over batch, voxels and components, σ² = exp(logVariance).
 *
 * @param mean `[B, ...S, ndim]` posterior mean μ of the velocity.
 * @param logVariance `[B, ...S, ndim]` posterior log-variance log σ² (VoxelMorph's "log_sigma").
 * @returns scalar to minimise.
 */
export function velocityKlLoss(
  mean: tf.Tensor,
  logVariance: tf.Tensor,
  options: VelocityKlOptions = {},
): tf.Scalar {
  const fn = 'velocityKlLoss';
  const nd = assertField(fn, 'mean', mean);
  assertField(fn, 'logVariance', logVariance);
  if (!tf.util.arraysEqual(mean.shape, logVariance.shape)) {
    fail(
      fn,
      `'mean' ${fmtShape(mean.shape)} and 'logVariance' ${fmtShape(logVariance.shape)} must have the same shape`,
    );
  }
  const lambda = options.priorLambda ?? 10;
  if (!(lambda > 0 && Number.isFinite(lambda))) {
    fail(fn, `'priorLambda' must be a positive finite number, got ${lambda}`);
  }
  const spatial = mean.shape.slice(1, 1 + nd);
  // number of in-image axis neighbours of every voxel: 2·ndim minus the borders it touches
  const degree = new Float32Array(spatial.reduce((a, b) => a * b, 1));
  const strides = spatial.map((_, k) => spatial.slice(k + 1).reduce((a, b) => a * b, 1));
  for (let i = 0; i < degree.length; i++) {
    let d = 0;
    for (let k = 0; k < nd; k++) {
      const c = Math.floor(i / strides[k]!) % spatial[k]!;
      d += (c > 0 ? 1 : 0) + (c < spatial[k]! - 1 ? 1 : 0);
    }
    degree[i] = d;
  }
  return tf.tidy(() => {
    const D = tf.tensor(degree, [1, ...spatial, 1]);
    const sigmaTerm = tf.mean(tf.sub(tf.mul(tf.mul(D, lambda), tf.exp(logVariance)), logVariance));
    const precTerm = tf.mul(diffusionLoss(mean), lambda * 0.5);
    return tf.mul(tf.add(sigmaTerm, precTerm), 0.5 * nd) as tf.Scalar;
  });
}
