import {
  assertImagePair,
  fail,
  hasKernels,
  lookUpOption,
  perAxis,
  RegkitParzenJoint,
  type RegkitParzenJointAttrs,
  RegkitParzenJointGrad,
  tf,
} from '@regkit/core';

/** Options of the Parzen-window mutual information losses. */
export interface MutualInformationOptions {
  /** Number of histogram bins (default 23, as MONAI). */
  bins?: number;
  /** Gaussian σ as a fraction of the bin spacing (default 0.5, as MONAI). */
  sigmaRatio?: number;
  /** Intensities `[low, high]` mapped to the bins; values outside are clamped (default [0, 1]). */
  intensityRange?: readonly [number, number];
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
  const intensityRange = o.intensityRange ?? [0, 1];
  if (!Number.isInteger(bins) || bins < 2) fail(fn, `'bins' must be an integer ≥ 2, got ${bins}`);
  if (!(sigmaRatio > 0)) fail(fn, `'sigmaRatio' must be > 0, got ${sigmaRatio}`);
  if (
    !Array.isArray(intensityRange) ||
    intensityRange.length !== 2 ||
    !(intensityRange[1] > intensityRange[0])
  ) {
    fail(
      fn,
      `'intensityRange' must be [low, high] with high > low, got ${JSON.stringify(intensityRange)}`,
    );
  }
  return { bins, sigmaRatio, intensityRange };
}

/** Gaussian Parzen weights `[B, N, bins]` (normalised per sample) of all voxels and channels of x. */
function parzenWeights(x: tf.Tensor, o: Required<MutualInformationOptions>): tf.Tensor {
  const [lo, hi] = o.intensityRange;
  const spacing = 1 / (o.bins - 1);
  const sigma = spacing * o.sigmaRatio;
  const centres = tf.linspace(0, 1, o.bins);
  const scaled = tf.clipByValue(tf.div(tf.sub(x, lo), hi - lo), 0, 1);
  const samples = tf.reshape(scaled, [x.shape[0]!, -1, 1]);
  const w = tf.exp(tf.mul(tf.square(tf.sub(samples, centres)), -1 / (2 * sigma * sigma)));
  return tf.div(w, tf.sum(w, -1, true));
}

/** Largest σ/spacing the Parzen kernel supports (its windows hold 8σ + 1/2 bin, ≤ 31 bins each side). */
const KERNEL_MAX_SIGMA_RATIO = 3.5;

/**
 * The joint and marginal histograms. On cpu and wasm with `@regkit/kernels` loaded, one
 * fused WebAssembly kernel computes them (`RegkitParzenJoint`, double-precision sums, O(N)
 * memory instead of the `[B, N, bins]` weight matrices) and another their gradient; in
 * nested tapes (gradients of gradients), for σ/spacing > 3.5 or elsewhere, tfjs ops.
 */
function histograms(a: tf.Tensor, b: tf.Tensor, o: Required<MutualInformationOptions>): Histograms {
  if (
    o.sigmaRatio <= KERNEL_MAX_SIGMA_RATIO &&
    tf.engine().state.gradientDepth <= 1 &&
    hasKernels(RegkitParzenJoint, RegkitParzenJointGrad)
  ) {
    return kernelHistograms(a, b, o);
  }
  const wa = parzenWeights(a, o);
  const wb = parzenWeights(b, o);
  const n = wa.shape[1]!;
  return {
    // explicit transpose: tfjs matMul(transposeA) is ~10× slower on wasm for tall inputs
    pab: tf.div(tf.matMul(tf.transpose(wa, [0, 2, 1]), wb), n),
    pa: tf.mean(wa, 1, true),
    pb: tf.mean(wb, 1, true),
  };
}

/** {@link histograms} by the `RegkitParzenJoint` kernel, its gradient by `RegkitParzenJointGrad`. */
function kernelHistograms(
  a: tf.Tensor,
  b: tf.Tensor,
  o: Required<MutualInformationOptions>,
): Histograms {
  const [lo, hi] = o.intensityRange;
  const attrs = {
    bins: o.bins,
    sigmaRatio: o.sigmaRatio,
    lo,
    range: hi - lo,
  } satisfies RegkitParzenJointAttrs as unknown as tf.NamedAttrMap;
  const batch = a.shape[0]!;
  const flat = (x: tf.Tensor) =>
    tf.reshape(x.dtype === 'float32' ? x : tf.cast(x, 'float32'), [batch, -1]);
  const packed = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [x, y, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    save([x, y]);
    // a kernel returning a list of outputs gets a list back
    const [value] = tf.engine().runKernel(RegkitParzenJoint, { a: x, b: y }, attrs) as tf.Tensor[];
    return {
      value: value!,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) =>
        tf
          .engine()
          .runKernel(
            RegkitParzenJointGrad,
            { a: saved[0]!, b: saved[1]!, dy: dy as tf.Tensor },
            attrs,
          ) as tf.Tensor[],
    };
  })(flat(a), flat(b));
  const m = o.bins * o.bins;
  return {
    pab: tf.reshape(tf.slice(packed, [0, 0], [batch, m]), [batch, o.bins, o.bins]),
    pa: tf.reshape(tf.slice(packed, [0, m], [batch, o.bins]), [batch, 1, o.bins]),
    pb: tf.reshape(tf.slice(packed, [0, m + o.bins], [batch, o.bins]), [batch, 1, o.bins]),
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
 * `intensityRange` to [0, 1] and clamped; bin centres linspace(0, 1, bins); σ = bin spacing ×
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
 * Minus the normalised mutual information (Studholme), −(H(A) + H(B)) / H(A, B), with the
 * Parzen histograms of {@link mutualInformationLoss} and H(p) = −Σ p log(p + 1e−7); mean
 * over the batch. NMI is 1 for independent images and up to 2 for identical ones, so the
 * loss lies in [−2, −1] and is minimised like every loss. Differentiable.
 *
 * @param a `[B, ...S, C]`.
 * @param b same shape as `a`.
 * @returns scalar −NMI to minimise.
 */
export function normalizedMutualInformationLoss(
  a: tf.Tensor,
  b: tf.Tensor,
  options: MutualInformationOptions = {},
): tf.Scalar {
  const fn = 'normalizedMutualInformationLoss';
  assertImagePair(fn, a, b);
  const o = checkOptions(fn, options);
  return tf.tidy(() => {
    const h = histograms(a, b, o);
    const entropy = (p: tf.Tensor, axes: number[]) =>
      tf.neg(tf.sum(tf.mul(p, tf.log(tf.add(p, EPS))), axes));
    const hab = entropy(h.pab, [1, 2]);
    return tf.neg(
      tf.mean(tf.div(tf.add(entropy(h.pa, [1, 2]), entropy(h.pb, [1, 2])), hab)),
    ) as tf.Scalar;
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

/** Options of {@link barrierNmiLoss}. */
export interface BarrierNmiOptions extends MutualInformationOptions {
  /** The barrier b (default 5, as INNReg): the loss keeps the dissimilarity below it. */
  bound?: number;
  /**
   * `'paper'` (default): INNReg's equation (11) with I = (H(A) + H(B)) / MI(A, B) on the
   * Parzen histograms of {@link mutualInformationLoss} (I ≥ 2, 2 for identical images).
   * `'code'`: the official code (`MeggieGuo/INNReg`, `util/losses.py` `NMI_Loss`):
   * I = 1 − MI with 19 bin centres 0.05…0.95 (σ = 0.025), all batch items pooled into one
   * histogram, p(a)p(b) + 1e−5 and log(p(a,b)/(p(a)p(b) + 1e−5) + 1e−5); `bins` and
   * `sigmaRatio` are then ignored.
   */
  form?: 'paper' | 'code';
  /**
   * Where the log barrier is continued linearly (default 1e−3): for x = b − I < δ the loss is
   * −log δ − (x − δ)/δ (value and slope continuous), so it stays finite — and keeps pushing I
   * down — when I reaches or passes b instead of returning NaN or Infinity.
   */
  delta?: number;
}

/** Options of {@link innregDissimilarity}: the histogram options and the form of I. */
export interface InnregDissimilarityOptions extends MutualInformationOptions {
  /** `'paper'` (default) or `'code'`, as {@link BarrierNmiOptions.form}. */
  form?: 'paper' | 'code';
}

/**
 * INNReg's dissimilarity I, the argument of its barrier, without the barrier (minimised):
 * - `form: 'paper'` (eq. 10): I = (H(A) + H(B)) / MI(A, B) on the Parzen histograms of
 *   {@link mutualInformationLoss}, MI floored at 1e−7, averaged over the batch (≥ 2; 2 for
 *   identical images);
 * - `form: 'code'` (the official `NMI_Loss`): I = 1 − MI with 19 bin centres 0.05…0.95,
 *   σ = 0.025, the batch pooled into one histogram (`bins`, `sigmaRatio` ignored).
 * Used alone it is the ablation "1 − MI at weight 1" of the barrier; {@link barrierNmiLoss}
 * is −log(b − I). Differentiable.
 *
 * @param a `[B, ...S, C]`, e.g. the warped source image.
 * @param b same shape, e.g. the target image.
 * @returns scalar I (nats⁻¹ ratio for 'paper', 1 − nats for 'code').
 */
export function innregDissimilarity(
  a: tf.Tensor,
  b: tf.Tensor,
  options: InnregDissimilarityOptions = {},
): tf.Scalar {
  return dissimilarityOf('innregDissimilarity', a, b, options);
}

function dissimilarityOf(
  fn: string,
  a: tf.Tensor,
  b: tf.Tensor,
  options: InnregDissimilarityOptions,
): tf.Scalar {
  assertImagePair(fn, a, b);
  const form = lookUpOption(fn, 'form', options.form ?? 'paper', ['paper', 'code'] as const);
  const o = checkOptions(fn, form === 'code' ? { ...options, bins: 19, sigmaRatio: 0.5 } : options);
  return tf.tidy(() => {
    if (form === 'paper') {
      const h = histograms(a, b, o);
      const entropy = (p: tf.Tensor) => tf.neg(tf.sum(tf.mul(p, tf.log(tf.add(p, EPS))), [1, 2]));
      const mi = tf.maximum(mutualInformation(h), EPS);
      return tf.mean(tf.div(tf.add(entropy(h.pa), entropy(h.pb)), mi)) as tf.Scalar;
    }
    return tf.sub(1, codeMutualInformation(a, b, o.intensityRange)) as tf.Scalar;
  });
}

/**
 * INNReg's barrier NMI loss −log(b − I): grows without bound as the dissimilarity I nears
 * the barrier b, and is nearly flat well below it. See {@link BarrierNmiOptions} for the
 * paper's and the official code's definitions of I (they differ; {@link innregDissimilarity})
 * and for the finite linear continuation past the barrier. Differentiable.
 *
 * @param a `[B, ...S, C]`, e.g. the warped source image.
 * @param b same shape, e.g. the target image.
 * @returns scalar to minimise.
 */
export function barrierNmiLoss(
  a: tf.Tensor,
  b: tf.Tensor,
  options: BarrierNmiOptions = {},
): tf.Scalar {
  const fn = 'barrierNmiLoss';
  assertImagePair(fn, a, b);
  const bound = options.bound ?? 5;
  const delta = options.delta ?? 1e-3;
  if (!Number.isFinite(bound)) fail(fn, `'bound' must be finite, got ${bound}`);
  if (!(delta > 0)) fail(fn, `'delta' must be > 0, got ${delta}`);
  return tf.tidy(() => {
    const dissimilarity = dissimilarityOf(fn, a, b, options);
    const x = tf.sub(bound, dissimilarity);
    const barrier = tf.neg(tf.log(tf.maximum(x, delta)));
    const linear = tf.sub(-Math.log(delta), tf.div(tf.sub(x, delta), delta));
    return tf.where(tf.greaterEqual(x, delta), barrier, linear) as tf.Scalar;
  });
}

/** MI as INNReg's `NMI_Loss.global_mi`: one pooled histogram, bin centres 0.05…0.95. */
function codeMutualInformation(
  a: tf.Tensor,
  b: tf.Tensor,
  range: readonly [number, number],
): tf.Tensor {
  const [lo, hi] = range;
  const centres = tf.linspace(0.05, 0.95, 19);
  const preterm = 1 / (2 * 0.025 * 0.025);
  const weights = (x: tf.Tensor) => {
    const s = tf.reshape(tf.clipByValue(tf.div(tf.sub(x, lo), hi - lo), 0, 1), [-1, 1]);
    const w = tf.exp(tf.mul(tf.square(tf.sub(s, centres)), -preterm));
    return tf.div(w, tf.sum(w, 1, true)); // [N, 19]
  };
  const wa = weights(a);
  const wb = weights(b);
  const n = wa.shape[0]!;
  const pab = tf.div(tf.matMul(wa, wb, true, false), n);
  const papb = tf.add(tf.matMul(tf.mean(wa, 0, true), tf.mean(wb, 0, true), true, false), 1e-5);
  return tf.sum(tf.mul(pab, tf.log(tf.add(tf.div(pab, papb), 1e-5))));
}
