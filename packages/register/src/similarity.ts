import {
  type FeatureExtractor,
  fail,
  fmtShape,
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
 * An image `[1, ...S, C]` read once into memory, for linear interpolation at a few points
 * ({@link PointImage.at}) in O(points) per call: `warp` (and its WebAssembly kernel, which
 * copies the image in and returns an image-sized gradient) costs O(image) per call, and
 * tfjs-wasm's `gather` is slow per element.
 */
export class PointImage {
  readonly spatial: number[];
  readonly channels: number;
  private readonly data: Float32Array;

  constructor(image: tf.Tensor) {
    this.spatial = image.shape.slice(1, -1);
    this.channels = image.shape[image.rank - 1]!;
    // read only (never written), so the backend's copy (or the cpu backend's own array) is kept
    const values = image.dataSync();
    this.data = values instanceof Float32Array ? values : Float32Array.from(values);
  }

  /** The values `[N, C]` at the flat voxel indices `index` (no gradient). */
  values(index: ArrayLike<number>): tf.Tensor {
    const c = this.channels;
    const out = new Float32Array(index.length * c);
    for (let i = 0; i < index.length; i++) {
      const o = index[i]! * c;
      for (let k = 0; k < c; k++) out[i * c + k] = this.data[o + k]!;
    }
    return tf.tensor2d(out, [index.length, c]);
  }

  /**
   * Linear interpolation at `points` `[N, ndim]` (voxel coordinates, voxel centres at integer
   * indices), `[N, C]`: Σ over the 2^ndim corners c of Π_k (1 − |p_k − c_k|) · image(c), a
   * corner outside the grid contributing 0 — `warp`'s `'linear'`/`'zeros'` rule, so
   * `at(x + u(x))` equals `warp(image, u)(x)`. Differentiable with respect to `points`
   * (∂/∂p_k: the same sum with the k-th factor replaced by ±1).
   */
  at(points: tf.Tensor): tf.Tensor {
    const { spatial, channels: c, data } = this;
    const nd = spatial.length;
    if (points.rank !== 2 || points.shape[1] !== nd) {
      fail('PointImage.at', `'points' must be [N, ${nd}], got ${fmtShape(points.shape)}`);
    }
    const strides = spatial.map((_, k) => spatial.slice(k + 1).reduce((a, b) => a * b, 1));
    const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
      const pts = args[0] as tf.Tensor;
      const p = pts.dataSync();
      const n = pts.shape[0]!;
      const out = new Float32Array(n * c);
      // ∂out[i, ch]/∂p[i, k]
      const jac = new Float32Array(n * c * nd);
      const base = new Array<number>(nd);
      const frac = new Array<number>(nd);
      for (let i = 0; i < n; i++) {
        for (let k = 0; k < nd; k++) {
          const v = p[i * nd + k]!;
          base[k] = Math.floor(v);
          frac[k] = v - base[k]!;
        }
        for (let corner = 0; corner < 1 << nd; corner++) {
          let index = 0;
          let inside = true;
          let weight = 1;
          for (let k = 0; k < nd; k++) {
            const bit = (corner >> (nd - 1 - k)) & 1;
            const ck = base[k]! + bit;
            if (ck < 0 || ck >= spatial[k]!) {
              inside = false;
              break;
            }
            index += ck * strides[k]!;
            weight *= bit ? frac[k]! : 1 - frac[k]!;
          }
          if (!inside) continue;
          const o = index * c;
          for (let ch = 0; ch < c; ch++) out[i * c + ch]! += weight * data[o + ch]!;
          for (let k = 0; k < nd; k++) {
            // the weight with factor k replaced by its derivative (+1 or −1)
            let dw = (corner >> (nd - 1 - k)) & 1 ? 1 : -1;
            for (let j = 0; j < nd; j++) {
              if (j !== k) dw *= (corner >> (nd - 1 - j)) & 1 ? frac[j]! : 1 - frac[j]!;
            }
            for (let ch = 0; ch < c; ch++) jac[(i * c + ch) * nd + k]! += dw * data[o + ch]!;
          }
        }
      }
      return {
        value: tf.tensor2d(out, [n, c]),
        gradFunc: (dy: tf.Tensor | tf.Tensor[]) => {
          const g = (dy as tf.Tensor).dataSync();
          const dp = new Float32Array(n * nd);
          for (let i = 0; i < n; i++) {
            for (let ch = 0; ch < c; ch++) {
              const gi = g[i * c + ch]!;
              for (let k = 0; k < nd; k++) dp[i * nd + k]! += gi * jac[(i * c + ch) * nd + k]!;
            }
          }
          return [tf.tensor2d(dp, [n, nd])];
        },
      };
    });
    return f(points);
  }
}

/** The voxel coordinates `[N, ndim]` of flat indices over the grid `spatial`. */
export function voxelCoordinates(index: ArrayLike<number>, spatial: readonly number[]): tf.Tensor {
  const nd = spatial.length;
  const n = index.length;
  const grid = new Float32Array(n * nd);
  for (let i = 0; i < n; i++) {
    let v = index[i]!;
    for (let k = nd - 1; k >= 0; k--) {
      const coord = v % spatial[k]!;
      v = (v - coord) / spatial[k]!;
      grid[i * nd + k] = coord;
    }
  }
  return tf.tensor2d(grid, [n, nd]);
}

/**
 * The moving image warped by the displacement `d` `[1, ...S, ndim]` at the voxels `sample`
 * (int32 `[N]` flat indices over S) only, as a `[1, N, 1, C]` image: out_i = moving(x_i +
 * d(x_i)) for the voxel x_i of sample i. The same values (and gradient with respect to `d`)
 * as `pickVoxels(warp(moving, d), sample)`, in O(N) ({@link PointImage.at}).
 */
export function warpAtVoxels(moving: PointImage, d: tf.Tensor, sample: tf.Tensor): tf.Tensor {
  const spatial = d.shape.slice(1, -1);
  const nd = spatial.length;
  const index = sample.dataSync();
  return tf.tidy(() => {
    const at = tf.gather(tf.reshape(d, [-1, nd]), sample);
    const points = tf.add(voxelCoordinates(index, spatial), at);
    return tf.reshape(moving.at(points), [1, index.length, 1, moving.channels]);
  });
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
