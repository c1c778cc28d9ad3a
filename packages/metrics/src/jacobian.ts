import { jacobianDeterminant, type tf } from '@regkit/core';

async function determinants(field: tf.Tensor): Promise<Float32Array> {
  const det = jacobianDeterminant(field);
  try {
    return (await det.data()) as Float32Array;
  } finally {
    det.dispose();
  }
}

function std(values: ArrayLike<number>): number {
  let mean = 0;
  for (let i = 0; i < values.length; i++) mean += values[i]!;
  mean /= values.length;
  let v = 0;
  for (let i = 0; i < values.length; i++) v += (values[i]! - mean) ** 2;
  return Math.sqrt(v / values.length);
}

/**
 * Percentage of voxels whose Jacobian determinant det(I + ∇u) is ≤ 0 (folding), with
 * core's `jacobianDeterminant` (central differences, one-sided at borders).
 *
 * @param field `[B, ...S, ndim]` displacement (voxels).
 * @returns percentage in [0, 100] over batch and voxels.
 */
export async function foldingFraction(field: tf.Tensor): Promise<number> {
  const det = await determinants(field);
  let n = 0;
  for (let i = 0; i < det.length; i++) if (det[i]! <= 0) n++;
  return (100 * n) / det.length;
}

/** Standard deviation (population) of det(I + ∇u) over batch and voxels. */
export async function jacobianStd(field: tf.Tensor): Promise<number> {
  return std(await determinants(field));
}

/**
 * Standard deviation of log det(I + ∇u) over batch and voxels, with the determinant
 * clipped to [1e−9, 1e9] first (so folded voxels count as very small volumes).
 */
export async function logJacobianStd(field: tf.Tensor): Promise<number> {
  const det = await determinants(field);
  return std(Float64Array.from(det, (d) => Math.log(Math.min(Math.max(d, 1e-9), 1e9))));
}
