import { type FeatureExtractor, fail, type tf } from '@regkit/core';
import { smoothedCosineLoss } from '@regkit/losses';
import type { RegisterImagesOptions } from './register_images.js';

/** MASR-Net's instance optimisation (Mok et al. 2024, Supp. Table 4), in its own units. */
export const DNS_PAPER_SCHEDULE = {
  levels: 3,
  iterations: [100, 80, 50],
  /** Adam learning rate per level, in normalised coordinates ([−1, 1] across the image). */
  learningRate: [1e-2, 5e-3, 3e-3],
  /** λ of ‖∇φ‖² per level (applied as is to regkit's voxel-unit diffusion: see below). */
  regularisationWeight: [0.6, 0.5, 0.4],
} as const;

/** Options of {@link dnsRegistrationOptions}. */
export interface DnsRegistrationOptions {
  /** σ of the Gaussian ψ_σ smoothing both feature maps, in voxels (default 1). */
  sigma?: number;
}

/**
 * {@link registerImages} options for IO-DNS: a MASR-Net feature extractor whose maps are
 * computed once at full resolution and resampled per level, the smoothed cosine similarity
 * `smoothedCosineLoss` (Eq. 5), a displacement field on each level's grid, and the paper's
 * 3-level schedule ({@link DNS_PAPER_SCHEDULE}): iterations as they are; learning rates
 * converted to voxels for the image's grid (on a level of mean size n one normalised unit is
 * (n − 1)/2 voxels: lr_vox = lr · (n − 1)/2); λ as it is, on regkit's diffusion of the
 * voxel-unit field. Converting λ to voxels too (λ · (2/(n − 1))²) left the field nearly
 * unregularised: 7 % of |J| ≤ 0 and Dice 63 against 82 with λ as is, on BraTS T1 → T2
 * training slices (examples/dns/src/tune.mjs).
 *
 * @param spatialShape S of the fixed image.
 * @param features the trained MASR-Net (or any {@link FeatureExtractor}).
 * @returns options to spread into `registerImages` (override any of them after).
 */
export function dnsRegistrationOptions(
  spatialShape: readonly number[],
  features: FeatureExtractor,
  options: DnsRegistrationOptions = {},
): RegisterImagesOptions {
  const fn = 'dnsRegistrationOptions';
  if (typeof features?.apply !== 'function') {
    fail(fn, `'features' must be a FeatureExtractor (e.g. the bundled MASR-Net)`);
  }
  if (spatialShape.length !== 2 && spatialShape.length !== 3) {
    fail(fn, `'spatialShape' must have 2 or 3 sizes, got ${JSON.stringify(spatialShape)}`);
  }
  const sigma = options.sigma ?? 1;
  const s = DNS_PAPER_SCHEDULE;
  const mean = spatialShape.reduce((a, b) => a + b, 0) / spatialShape.length;
  const half = (level: number) => (mean / 2 ** (s.levels - 1 - level) - 1) / 2;
  return {
    features,
    featuresOnce: true,
    similarity: (f: tf.Tensor, m: tf.Tensor) => smoothedCosineLoss(f, m, { sigma }),
    transform: 'displacement',
    fieldDownsample: 1,
    levels: s.levels,
    iterations: s.iterations,
    learningRate: s.learningRate.map((lr, l) => lr * half(l)),
    regularisationWeight: [...s.regularisationWeight],
  };
}
