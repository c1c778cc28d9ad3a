/**
 * @regkit/register — pairwise registration without a trained model: multi-resolution
 * instance optimisation of a velocity or displacement field with any `Similarity` of
 * `@regkit/core`'s contracts, or any `FeatureExtractor` (MIND-SSC, a network encoder, DNS)
 * whose features are computed once per level and warped. Browser-safe (no Node.js
 * built-ins); `@regkit/cli` is a thin layer of argument parsing and file IO over it.
 *
 * @packageDocumentation
 */

export {
  type AffineInit,
  type AffineProgress,
  type AffineTransform,
  affineDisplacement,
  invertAffine,
  type RegisterAffineOptions,
  type RegisterAffineResult,
  registerAffine,
} from './affine.js';
export {
  DNS_PAPER_SCHEDULE,
  type DnsRegistrationOptions,
  dnsRegistrationOptions,
} from './dns.js';
export { normalizeIntensity, selectKth } from './intensity.js';
export {
  type RegisterImagesOptions,
  type RegisterImagesResult,
  type RegistrationProgress,
  registerImages,
  type SimilarityName,
  type TransformModel,
} from './register_images.js';
export {
  PointImage,
  pickVoxels,
  SIMILARITY_NAMES,
  sampleVoxels,
  voxelCoordinates,
  warpAtVoxels,
} from './similarity.js';
