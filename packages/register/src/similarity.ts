import {
  type FeatureExtractor,
  fail,
  resizeImage,
  type Similarity,
  type SimilarityLoss,
  similarityLoss,
  tf,
} from '@regkit/core';
import {
  globalNccLoss,
  localNccLoss,
  mindSsc,
  mseLoss,
  mutualInformationLoss,
} from '@regkit/losses';

/**
 * The similarities {@link registerImages} and {@link registerAffine} know by name:
 * `'lncc'` local NCC, `'ncc'` global NCC, `'mi'` Parzen mutual information, `'mind'`
 * MIND-SSC descriptors compared by mean squared difference, `'mse'` mean squared difference.
 */
export type SimilarityName = 'lncc' | 'ncc' | 'mi' | 'mind' | 'mse';

/** Every {@link SimilarityName}, in the order error messages list them. */
export const SIMILARITY_NAMES: readonly SimilarityName[] = ['lncc', 'ncc', 'mi', 'mind', 'mse'];

/**
 * Validates a `similarity` option: returns its name, or `null` for a user {@link Similarity}
 * (a loss function or a module with `loss`). Throws a `RegkitError` naming `fn` otherwise.
 */
export function similarityName(
  fn: string,
  similarity: SimilarityName | Similarity,
): SimilarityName | null {
  const list = `${SIMILARITY_NAMES.join(', ')} or a Similarity`;
  if (typeof similarity === 'string') {
    if (!SIMILARITY_NAMES.includes(similarity as SimilarityName)) {
      fail(fn, `'similarity' must be ${list}, got '${similarity}'`);
    }
    return similarity;
  }
  if (typeof similarity !== 'function' && (typeof similarity !== 'object' || similarity === null)) {
    fail(fn, `'similarity' must be ${list}, got ${similarity}`);
  }
  return null;
}

/** The MIND-SSC descriptors as a {@link FeatureExtractor} (radius 1, dilation 2). */
export const MIND_FEATURES: FeatureExtractor = { apply: (image) => mindSsc(image) };

/** Mean squared difference of feature maps: the default feature similarity. */
export const featureMse: SimilarityLoss = (f, m) => mseLoss(f, m);

/**
 * The loss of one pyramid level, `(fixed or its features, warped moving or its features,
 * sample) => scalar`; `sample` (int32 `[N]` flat voxel indices, or `null` for all voxels) is
 * used by `'mi'` only.
 */
export type LevelLoss = (f: tf.Tensor, w: tf.Tensor, sample: tf.Tensor | null) => tf.Scalar;

/** Options of {@link levelLoss}. */
export interface LevelLossOptions {
  /** Local NCC window (odd). */
  window: number;
  /** MI histogram bins. */
  bins: number;
}

/**
 * Resolves a similarity (a name from {@link similarityName}, or `null` with the user's
 * `similarity`) into the {@link LevelLoss} of a level. MI compares intensities in [0, 1]
 * (`intensityRange: [0, 1]`); `'mind'` compares precomputed MIND features by mean squared
 * difference.
 */
export function levelLoss(
  fn: string,
  named: SimilarityName | null,
  similarity: SimilarityName | Similarity,
  options: LevelLossOptions,
): LevelLoss {
  const { window, bins } = options;
  if (named === 'lncc') return (f, w) => localNccLoss(f, w, { window });
  if (named === 'ncc') return (f, w) => globalNccLoss(f, w);
  if (named === 'mse') return (f, w) => mseLoss(f, w);
  if (named === 'mind') return featureMse;
  if (named === 'mi') {
    return (f, w, sample) => {
      if (!sample) return mutualInformationLoss(f, w, { bins, intensityRange: [0, 1] });
      return mutualInformationLoss(pickVoxels(f, sample), pickVoxels(w, sample), {
        bins,
        intensityRange: [0, 1],
      });
    };
  }
  const loss = similarityLoss(similarity as Similarity, fn);
  return (f, w) => loss(f, w);
}

/**
 * The voxels `sample` (flat indices over the spatial grid) of `x` `[1, ...S, C]`, as a
 * `[1, N, 1, C]` image (a 2D image of N rows), so image losses apply to them.
 */
export function pickVoxels(x: tf.Tensor, sample: tf.Tensor): tf.Tensor {
  const c = x.shape[x.rank - 1]!;
  return tf.reshape(tf.gather(tf.reshape(x, [-1, c]), sample), [1, -1, 1, c]);
}

/**
 * MI's random voxel sampler (as elastix's): `samples` flat indices drawn uniformly (with
 * replacement) in [0, voxels) from `seed`, or `null` when the grid has no more voxels than
 * `samples` (then every voxel is used).
 */
export function sampleVoxels(voxels: number, samples: number, seed: number): tf.Tensor | null {
  return voxels > samples ? tf.randomUniform([samples], 0, voxels, 'int32', seed) : null;
}

/** A pyramid level's grid: `shape` shrunk by `factor` with corners aligned. */
export function levelShape(shape: readonly number[], factor: number): number[] {
  return shape.map((s) => (s > 1 ? Math.max(2, Math.round((s - 1) / factor) + 1) : 1));
}

/**
 * The image pyramid of a pair, coarsest first: level ℓ of `levels` has the grid
 * {@link levelShape}(S, 2^(levels − 1 − ℓ)); built finest to coarsest with `resizeImage`
 * (Gaussian anti-aliasing, corners aligned), each level from the one twice its size. The
 * caller disposes the tensors (a level equal to the input is a clone).
 */
export function imagePyramid(
  fixed: tf.Tensor,
  moving: tf.Tensor,
  shapes: readonly number[][],
): Array<[tf.Tensor, tf.Tensor]> {
  const pyramid: Array<[tf.Tensor, tf.Tensor]> = [];
  let prev: [tf.Tensor, tf.Tensor] = [fixed, moving];
  for (let level = shapes.length - 1; level >= 0; level--) {
    const shape = shapes[level]!;
    const next: [tf.Tensor, tf.Tensor] = [resizeImage(prev[0], shape), resizeImage(prev[1], shape)];
    pyramid[level] = next;
    prev = next;
  }
  return pyramid;
}

/**
 * The pyramid schedule of a multi-resolution stage: `levels` (an integer in [1, 6], default
 * 3) and the iterations per level, coarsest first (default `[coarse…, middle, finest]` from
 * `defaults`, trimmed to the number of levels). Throws naming `fn` and the option.
 */
export function levelSchedule(
  fn: string,
  levels: number | undefined,
  iterations: readonly number[] | undefined,
  defaults: { coarse: number; middle: number; finest: number },
): { levels: number; iterations: readonly number[] } {
  const n = levels ?? 3;
  if (!Number.isInteger(n) || n < 1 || n > 6) {
    fail(fn, `'levels' must be an integer in [1, 6], got ${n}`);
  }
  const its =
    iterations ??
    Array.from({ length: n }, (_, i) =>
      i === n - 1 ? defaults.finest : i === n - 2 ? defaults.middle : defaults.coarse,
    );
  if (its.length !== n || its.some((k) => !Number.isInteger(k) || k < 0)) {
    fail(fn, `'iterations' must list ${n} non-negative integers, got ${JSON.stringify(its)}`);
  }
  return { levels: n, iterations: its };
}

/**
 * The feature extractor a stage uses: the given one, MIND-SSC for the name `'mind'`, or none.
 * Throws naming `fn` when `features` is not a {@link FeatureExtractor} or is combined with a
 * similarity that is not a feature similarity (`mi`, `mind`).
 */
export function stageExtractor(
  fn: string,
  named: SimilarityName | null,
  features: FeatureExtractor | undefined,
): FeatureExtractor | null {
  if (features !== undefined && typeof features?.apply !== 'function') {
    fail(fn, `'features' must be a FeatureExtractor with apply(image) => features`);
  }
  if (features && (named === 'mi' || named === 'mind')) {
    fail(
      fn,
      `'features' takes a feature similarity (mse, ncc, lncc or a Similarity), not '${named}'`,
    );
  }
  return features ?? (named === 'mind' ? MIND_FEATURES : null);
}
