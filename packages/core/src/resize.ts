import { sampleImage } from './sample.js';
import { tf } from './tf.js';
import { assertField, assertSpatialShape, fail } from './validate.js';

/**
 * Resamples a displacement field to a new grid over the same physical extent
 * and rescales its vectors, so it describes the same deformation on the new grid.
 *
 * Grid corners are aligned (torch `interpolate(..., align_corners=True)`): output voxel
 * i_k samples the input at i_k (S_k − 1)/(S'_k − 1) (linear interpolation), and component k
 * is multiplied by (S'_k − 1)/(S_k − 1). Differentiable with respect to `field`.
 *
 * @param field `[B, ...S, ndim]` displacement (voxels of the input grid).
 * @param spatialShape the new spatial shape S'.
 * @returns `[B, ...S', ndim]` displacement in voxels of the new grid.
 */
export function resizeField(field: tf.Tensor, spatialShape: readonly number[]): tf.Tensor {
  const fn = 'resizeField';
  const nd = assertField(fn, 'field', field);
  const snd = assertSpatialShape(fn, 'spatialShape', spatialShape);
  if (nd !== snd)
    fail(fn, `'spatialShape' ${JSON.stringify(spatialShape)} must have ${nd} entries`);
  const inSpatial = field.shape.slice(1, 1 + nd);
  const out = [...spatialShape];
  const scale = inSpatial.map((s, k) => (out[k]! > 1 && s > 1 ? (s - 1) / (out[k]! - 1) : 0));
  const coords = out.map((s, k) => Array.from({ length: s }, (_, i) => i * scale[k]!));
  const vectorScale = inSpatial.map((s, k) => (s > 1 && out[k]! > 1 ? (out[k]! - 1) / (s - 1) : 1));
  return tf.tidy(() =>
    tf.mul(sampleImage(field, null, out, coords, 'linear', 'border'), tf.tensor1d(vectorScale)),
  );
}
