import { assertImagePair, fail, perAxis, tf } from '@regkit/core';

/** Options of the Parzen-window mutual information losses. */
export interface MutualInformationOptions {
  /** Number of histogram bins (default 23, as MONAI). */
  bins?: number;
  /** Gaussian σ as a fraction of the bin spacing (default 0.5, as MONAI). */
  sigmaRatio?: number;
  /** Intensity range mapped to the bins; values outside are clamped (default [0, 1]). */
  range?: readonly [number, number];
}

interface Histograms {
  /** joint p(a, b) `[B, bins, bins]` */
  pab: tf.Tensor;
  /** marginals `[B, 1, bins]` */
  pa: tf.Tensor;
  pb: tf.Tensor;
}

function checkOptions(fn: string, o: MutualInformationOptions): Required<MutualInformationOptions> {
  const bins = o.bins ?? 23;
  const sigmaRatio = o.sigmaRatio ?? 0.5;
  const range = o.range ?? [0, 1];
  if (!Number.isInteger(bins) || bins < 2) fail(fn, `'bins' must be an integer ≥ 2, got ${bins}`);
  if (!(sigmaRatio > 0)) fail(fn, `'sigmaRatio' must be > 0, got ${sigmaRatio}`);
  if (!Array.isArray(range) || range.length !== 2 || !(range[1] > range[0])) {
    fail(fn, `'range' must be [low, high] with high > low, got ${JSON.stringify(range)}`);
  }
  return { bins, sigmaRatio, range };
}

/** Gaussian Parzen weights `[B, N, bins]` (normalised per sample) of all voxels and channels of x. */
function parzenWeights(x: tf.Tensor, o: Required<MutualInformationOptions>): tf.Tensor {
  const [lo, hi] = o.range;
  const spacing = 1 / (o.bins - 1);
  const sigma = spacing * o.sigmaRatio;
  const centres = tf.linspace(0, 1, o.bins);
  const scaled = tf.clipByValue(tf.div(tf.sub(x, lo), hi - lo), 0, 1);
  const samples = tf.reshape(scaled, [x.shape[0]!, -1, 1]);
  const w = tf.exp(tf.mul(tf.square(tf.sub(samples, centres)), -1 / (2 * sigma * sigma)));
  return tf.div(w, tf.sum(w, -1, true));
}

function histograms(a: tf.Tensor, b: tf.Tensor, o: Required<MutualInformationOptions>): Histograms {
  const wa = parzenWeights(a, o);
  const wb = parzenWeights(b, o);
  const n = wa.shape[1]!;
  return {
    pab: tf.div(tf.matMul(wa, wb, true, false), n),
    pa: tf.mean(wa, 1, true),
    pb: tf.mean(wb, 1, true),
  };
}

const EPS = 1e-7;

/** MI per batch item `[B]` from histograms, MONAI's form with ε = 1e−7. */
function mutualInformation(h: Histograms): tf.Tensor {
  const papb = tf.matMul(h.pa, h.pb, true, false);
  const ratio = tf.add(tf.div(tf.add(h.pab, EPS), tf.add(papb, EPS)), EPS);
  return tf.sum(tf.mul(h.pab, tf.log(ratio)), [1, 2]);
}

/**
 * Mutual information loss with Gaussian Parzen windows — the MONAI
 * `GlobalMutualInformationLoss` (kernel 'gaussian') definition: intensities mapped from
 * `range` to [0, 1] and clamped; bin centres linspace(0, 1, bins); σ = bin spacing ×
 * sigmaRatio; weights normalised per voxel; p(a, b) = W_aᵀ W_b / N over all voxels and
 * channels of each batch item; MI = Σ p(a,b) log((p(a,b) + ε)/(p(a)p(b) + ε) + ε), ε = 1e−7;
 * loss = −mean(MI) over the batch. For images of different modalities.
 *
 * @param a `[B, ...S, C]`.
 * @param b same shape as `a`.
 * @returns scalar to minimise (−MI, in nats).
 */
export function mutualInformationLoss(
  a: tf.Tensor,
  b: tf.Tensor,
  options: MutualInformationOptions = {},
): tf.Scalar {
  const fn = 'mutualInformationLoss';
  assertImagePair(fn, a, b);
  const o = checkOptions(fn, options);
  return tf.tidy(() => tf.neg(tf.mean(mutualInformation(histograms(a, b, o)))) as tf.Scalar);
}

/**
 * Normalised mutual information (Studholme): (H(A) + H(B)) / H(A, B) with the Parzen
 * histograms of {@link mutualInformationLoss} and H(p) = −Σ p log(p + 1e−7); mean over the
 * batch. 1 for independent images, up to 2 for identical ones. Differentiable.
 *
 * @param a `[B, ...S, C]`.
 * @param b same shape as `a`.
 * @returns scalar NMI (a similarity, not a loss: maximise it).
 */
export function normalizedMutualInformation(
  a: tf.Tensor,
  b: tf.Tensor,
  options: MutualInformationOptions = {},
): tf.Scalar {
  const fn = 'normalizedMutualInformation';
  assertImagePair(fn, a, b);
  const o = checkOptions(fn, options);
  return tf.tidy(() => {
    const h = histograms(a, b, o);
    const entropy = (p: tf.Tensor, axes: number[]) =>
      tf.neg(tf.sum(tf.mul(p, tf.log(tf.add(p, EPS))), axes));
    const hab = entropy(h.pab, [1, 2]);
    return tf.mean(tf.div(tf.add(entropy(h.pa, [1, 2]), entropy(h.pb, [1, 2])), hab)) as tf.Scalar;
  });
}

/** Options of {@link localMutualInformationLoss}. */
export interface LocalMutualInformationOptions extends MutualInformationOptions {
  /** Patch size in voxels, one value or one per spatial axis (default 16). */
  patchSize?: number | readonly number[];
}

/**
 * Local mutual information loss: the image is cut into non-overlapping patches of
 * `patchSize` voxels (a remainder at the high end of an axis is dropped), the MI of
 * {@link mutualInformationLoss} is computed in every patch, and the loss is −mean over
 * patches and batch. Captures spatially varying intensity relations (bias fields).
 *
 * @param a `[B, ...S, C]`, every spatial size ≥ the patch size.
 * @param b same shape as `a`.
 * @returns scalar to minimise.
 */
export function localMutualInformationLoss(
  a: tf.Tensor,
  b: tf.Tensor,
  options: LocalMutualInformationOptions = {},
): tf.Scalar {
  const fn = 'localMutualInformationLoss';
  const nd = assertImagePair(fn, a, b);
  const o = checkOptions(fn, options);
  const p = perAxis(fn, 'patchSize', options.patchSize ?? 16, nd);
  const spatial = a.shape.slice(1, 1 + nd);
  if (p.some((v, k) => !Number.isInteger(v) || v < 1 || v > spatial[k]!)) {
    fail(
      fn,
      `'patchSize' must be integers in [1, spatial size ${JSON.stringify(spatial)}], got ${JSON.stringify(p)}`,
    );
  }
  return tf.tidy(() => {
    const counts = spatial.map((s, k) => Math.floor(s / p[k]!));
    const toPatches = (x: tf.Tensor) => {
      const c = x.shape[x.rank - 1]!;
      const b = x.shape[0]!;
      const cropped = tf.slice(x, new Array(x.rank).fill(0), [
        b,
        ...counts.map((n, k) => n * p[k]!),
        c,
      ]);
      // [B, n0, p0, n1, p1, (n2, p2,) C] → [B, n0, n1, (n2,) p0, p1, (p2,) C] → [B·Πn, p..., C]
      const split = tf.reshape(cropped, [b, ...counts.flatMap((n, k) => [n, p[k]!]), c]);
      const perm = [
        0,
        ...counts.map((_, k) => 1 + 2 * k),
        ...counts.map((_, k) => 2 + 2 * k),
        1 + 2 * nd,
      ];
      return tf.reshape(tf.transpose(split, perm), [-1, ...p, c]);
    };
    return tf.neg(
      tf.mean(mutualInformation(histograms(toPatches(a), toPatches(b), o))),
    ) as tf.Scalar;
  });
}
