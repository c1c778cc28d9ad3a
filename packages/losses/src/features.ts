import {
  assertImage,
  assertImagePair,
  fail,
  fmtShape,
  gaussianSmooth,
  hasKernels,
  mulberry32,
  RegkitMindSsc,
  type RegkitMindSscAttrs,
  RegkitMindSscGrad,
  tf,
} from '@regkit/core';

/**
 * Cosine-similarity loss between feature maps (DNS): per voxel
 * cos = ⟨fa, fb⟩ / max(|fa|·|fb|, 1e−8) over the channel axis (torch `cosine_similarity`),
 * loss = 1 − mean(cos) over batch and voxels.
 *
 * @param fa `[B, ...S, C]` features.
 * @param fb same shape.
 * @returns scalar to minimise, in [0, 2].
 */
export function cosineSimilarityLoss(fa: tf.Tensor, fb: tf.Tensor): tf.Scalar {
  assertImagePair('cosineSimilarityLoss', fa, fb);
  return tf.tidy(() => {
    const dot = tf.sum(tf.mul(fa, fb), -1);
    const norms = tf.sqrt(
      tf.maximum(tf.mul(tf.sum(tf.square(fa), -1), tf.sum(tf.square(fb), -1)), 1e-16),
    );
    return tf.sub(1, tf.mean(tf.div(dot, norms))) as tf.Scalar;
  });
}

/** Options of {@link infoNceLoss}. */
export interface InfoNceOptions {
  /** Softmax temperature (default 0.07). */
  temperature?: number;
}

/**
 * InfoNCE contrastive loss (DNS / MASR-Net): rows are L2-normalised (F.normalize, ε = 1e−12),
 * logits_ij = ⟨anchor_i, positive_j⟩ / temperature, and the loss is the cross-entropy of
 * each anchor against its own positive: mean_i (logsumexp_j logits_ij − logits_ii). The other
 * rows act as negatives.
 *
 * @param anchors `[N, D]`.
 * @param positives `[N, D]`, row i the positive of anchor i.
 * @returns scalar to minimise.
 */
export function infoNceLoss(
  anchors: tf.Tensor,
  positives: tf.Tensor,
  options: InfoNceOptions = {},
): tf.Scalar {
  const fn = 'infoNceLoss';
  const t = options.temperature ?? 0.07;
  if (
    anchors.rank !== 2 ||
    positives.rank !== 2 ||
    !tf.util.arraysEqual(anchors.shape, positives.shape)
  ) {
    fail(
      fn,
      `'anchors' ${fmtShape(anchors.shape)} and 'positives' ${fmtShape(positives.shape)} must both be [N, D]`,
    );
  }
  if (!(t > 0)) fail(fn, `'temperature' must be > 0, got ${t}`);
  return tf.tidy(() => {
    const normalise = (x: tf.Tensor) =>
      tf.div(x, tf.maximum(tf.norm(x, 'euclidean', 1, true), 1e-12));
    const logits = tf.div(tf.matMul(normalise(anchors), normalise(positives), false, true), t);
    const n = anchors.shape[0]!;
    const diag = tf.sum(tf.mul(logits, tf.eye(n)), 1);
    return tf.mean(tf.sub(tf.logSumExp(logits, 1), diag)) as tf.Scalar;
  });
}

/** Identity forward, zero gradient (torch `.item()` / `detach()` semantics). */
function stopGradient(x: tf.Tensor): tf.Tensor {
  return tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const v = args[0] as tf.Tensor;
    return { value: tf.clone(v), gradFunc: (dy) => tf.zerosLike(dy as tf.Tensor) };
  })(x);
}

/** Replicate ('edge') padding of `amount` voxels on both sides of `axis`. */
function padReplicate(x: tf.Tensor, axis: number, amount: number): tf.Tensor {
  const n = x.shape[axis]!;
  const idx = Array.from({ length: n + 2 * amount }, (_, i) =>
    Math.min(Math.max(i - amount, 0), n - 1),
  );
  return tf.gather(x, tf.tensor1d(idx, 'int32'), axis);
}

/** x shifted by `offset` voxels with replicate borders: out(p) = x(clamp(p + offset)). */
function shifted(x: tf.Tensor, offset: number[]): tf.Tensor {
  let y = x;
  offset.forEach((o, k) => {
    if (o === 0) return;
    const n = x.shape[k + 1]!;
    const idx = Array.from({ length: n }, (_, i) => Math.min(Math.max(i + o, 0), n - 1));
    y = tf.gather(y, tf.tensor1d(idx, 'int32'), k + 1);
  });
  return y;
}

/** Mean over a (2r+1)^nd window with replicate borders (torch avg_pool of a ReplicationPad). */
function replicateBoxMean(x: tf.Tensor, r: number, nd: number): tf.Tensor {
  if (r === 0) return x;
  let y = x;
  for (let k = 0; k < nd; k++) y = padReplicate(y, k + 1, r);
  const w = 2 * r + 1;
  return nd === 2
    ? tf.avgPool(y as tf.Tensor4D, w, 1, 'valid')
    : tf.avgPool3d(y as tf.Tensor5D, w, 1, 'valid');
}

/** MIND-SSC pairs: 3D, Heinrich's 12 pairs of the six-neighbourhood at distance √2 (in his order). */
function sscPairs(nd: number): Array<[number[], number[]]> {
  if (nd === 3) {
    const six = [
      [0, 1, 1],
      [1, 1, 0],
      [1, 0, 1],
      [1, 1, 2],
      [2, 1, 1],
      [1, 2, 1],
    ];
    const pairs: Array<[number[], number[]]> = [];
    for (let i = 0; i < 6; i++) {
      for (let j = 0; j < 6; j++) {
        const d = six[i]!.reduce((s, v, k) => s + (v - six[j]![k]!) ** 2, 0);
        if (i > j && d === 2) pairs.push([six[i]!.map((v) => v - 1), six[j]!.map((v) => v - 1)]);
      }
    }
    return pairs;
  }
  const four = [
    [-1, 0],
    [0, -1],
    [0, 1],
    [1, 0],
  ];
  const pairs: Array<[number[], number[]]> = [];
  for (let i = 0; i < 4; i++) {
    for (let j = i + 1; j < 4; j++) {
      const d = four[i]!.reduce((s, v, k) => s + (v - four[j]![k]!) ** 2, 0);
      if (d === 2) pairs.push([four[i]!, four[j]!]);
    }
  }
  return pairs;
}

/** Heinrich's output channel order of the 12 3D pairs ("same ordering as C++ code"). */
const MIND_ORDER_3D = [6, 8, 1, 11, 2, 10, 0, 7, 9, 4, 5, 3];

/** Options of {@link mindSsc}. */
export interface MindSscOptions {
  /** Patch radius of the box average (default 1). */
  radius?: number;
  /** Neighbour distance in voxels (default 2). */
  dilation?: number;
}

/**
 * MIND-SSC descriptor (Heinrich et al. 2013, self-similarity context), following Heinrich's
 * PyTorch `MINDSSC`: for each pair of six-neighbourhood offsets at distance √2·dilation
 * (12 pairs in 3D), the squared difference of the two shifted images (replicate borders) is
 * box-averaged over (2·radius+1)^3 voxels; D ← D − min over pairs; V = mean over pairs,
 * clamped to [0.001, 1000] × its global mean (bounds without gradient); MIND = exp(−D/V),
 * channels reordered as Heinrich's [6, 8, 1, 11, 2, 10, 0, 7, 9, 4, 5, 3]. In 2D: the 4 pairs
 * of the 4-neighbourhood at distance √2·dilation, no reordering. A modality-independent
 * structural representation.
 *
 * On cpu and wasm with `@regkit/kernels` loaded, one fused WebAssembly kernel computes it
 * (`RegkitMindSsc`), and its gradient another (`RegkitMindSscGrad`, used while a tape
 * records; the gradient of the min over pairs as tfjs's `Min`: every pair tied at the min
 * gets the whole gradient). Without them (elsewhere, or while a tape records and only the
 * forward kernel is registered) it is composed of tfjs ops; both are differentiable.
 *
 * @param image `[B, ...S, 1]`.
 * @returns `[B, ...S, 12]` (3D) or `[B, ...S, 4]` (2D).
 */
export function mindSsc(image: tf.Tensor, options: MindSscOptions = {}): tf.Tensor {
  const fn = 'mindSsc';
  const nd = assertImage(fn, 'image', image);
  if (image.shape[image.rank - 1] !== 1)
    fail(fn, `'image' must have 1 channel, got ${fmtShape(image.shape)}`);
  const radius = options.radius ?? 1;
  const dilation = options.dilation ?? 2;
  if (!Number.isInteger(radius) || radius < 0)
    fail(fn, `'radius' must be an integer ≥ 0, got ${radius}`);
  if (!Number.isInteger(dilation) || dilation < 1)
    fail(fn, `'dilation' must be an integer ≥ 1, got ${dilation}`);
  const tapeOn = tf.engine().isTapeOn();
  if (hasKernels(RegkitMindSsc) && (!tapeOn || hasKernels(RegkitMindSscGrad))) {
    const pairs = sscPairs(nd);
    const ordered = nd === 3 ? MIND_ORDER_3D.map((k) => pairs[k]!) : pairs;
    const attrs: RegkitMindSscAttrs = {
      radius,
      pairs: ordered.map(([p, q]) => [p.map((v) => v * dilation), q.map((v) => v * dilation)]),
    };
    return tf.tidy(() => {
      const x = image.dtype === 'float32' ? image : tf.cast(image, 'float32');
      // a kernel returning a list of outputs gets a list back
      const [out] = tf
        .engine()
        .runKernel(RegkitMindSsc, { image: x }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
      return out!;
    });
  }
  return tf.tidy(() => {
    const x = image.dtype === 'float32' ? image : tf.cast(image, 'float32');
    const ssd = tf.concat(
      sscPairs(nd).map(([p, q]) =>
        replicateBoxMean(
          tf.square(
            tf.sub(
              shifted(
                x,
                p.map((v) => v * dilation),
              ),
              shifted(
                x,
                q.map((v) => v * dilation),
              ),
            ),
          ),
          radius,
          nd,
        ),
      ),
      -1,
    );
    const mind = tf.sub(ssd, tf.min(ssd, -1, true));
    let variance = tf.mean(mind, -1, true);
    // bounds as full tensors: tfjs's Maximum/Minimum gradients do not reduce broadcast inputs
    const m = tf.add(tf.zerosLike(variance), stopGradient(tf.mean(variance)));
    variance = tf.minimum(tf.maximum(variance, tf.mul(m, 0.001)), tf.mul(m, 1000));
    const out = tf.exp(tf.neg(tf.div(mind, variance)));
    if (nd === 3) return tf.gather(out, tf.tensor1d(MIND_ORDER_3D, 'int32'), -1);
    return out;
  });
}

/**
 * MIND loss: mean squared difference of the MIND-SSC descriptors of `a` and `b` over every
 * element. Multi-modal, differentiable.
 *
 * @param a `[B, ...S, 1]`.
 * @param b same shape.
 */
export function mindLoss(a: tf.Tensor, b: tf.Tensor, options: MindSscOptions = {}): tf.Scalar {
  assertImagePair('mindLoss', a, b);
  return tf.tidy(
    () => tf.mean(tf.squaredDifference(mindSsc(a, options), mindSsc(b, options))) as tf.Scalar,
  );
}

/** Options of {@link sampleForegroundVoxels}. */
export interface ForegroundSampleOptions {
  /** N^k, voxels drawn (default 8192; all foreground voxels when there are fewer). */
  samples?: number;
  /** Foreground: voxels whose first channel is > threshold (default 0). */
  threshold?: number;
  /** Seed of the draw (default 0). */
  seed?: number;
}

/**
 * Draws N distinct foreground voxels of `image` (first batch element, first channel >
 * threshold) uniformly without replacement (partial Fisher–Yates on a seeded mulberry32
 * stream), for the contrastive loss of MASR-Net. Reads the image once (async).
 *
 * @param image `[B, ...S, C]`.
 * @returns int32 `[N]` flat voxel indices over S, ascending.
 */
export async function sampleForegroundVoxels(
  image: tf.Tensor,
  options: ForegroundSampleOptions = {},
): Promise<tf.Tensor1D> {
  const fn = 'sampleForegroundVoxels';
  assertImage(fn, 'image', image);
  const n = options.samples ?? 8192;
  const threshold = options.threshold ?? 0;
  if (!Number.isInteger(n) || n < 2) fail(fn, `'samples' must be an integer ≥ 2, got ${n}`);
  const c = image.shape[image.rank - 1]!;
  const voxels = image.shape.slice(1, -1).reduce((a, b) => a * b, 1);
  const values = await image.data();
  const fg: number[] = [];
  for (let v = 0; v < voxels; v++) if (values[v * c]! > threshold) fg.push(v);
  if (fg.length < 2) {
    fail(
      fn,
      `'image' ${fmtShape(image.shape)} has ${fg.length} voxels above ${threshold}: need ≥ 2`,
    );
  }
  const rand = mulberry32(options.seed ?? 0);
  const k = Math.min(n, fg.length);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rand() * (fg.length - i));
    [fg[i], fg[j]] = [fg[j]!, fg[i]!];
  }
  const picked = Int32Array.from(fg.slice(0, k)).sort();
  return tf.tensor1d(picked, 'int32');
}

/**
 * The anatomy-aware contrastive loss of MASR-Net (Eq. 4): the feature vectors of two views
 * of one image at the same N sampled voxels are positive pairs, those at other sampled
 * voxels negatives: {@link infoNceLoss}(D[indices], D′[indices]) with temperature τ.
 *
 * @param features `[1, ...S, C]` D of one view.
 * @param augmented `[1, ...S, C]` D′ of the other view (same grid).
 * @param indices int32 `[N]` flat voxel indices ({@link sampleForegroundVoxels}).
 * @returns scalar to minimise.
 */
export function contrastiveVoxelLoss(
  features: tf.Tensor,
  augmented: tf.Tensor,
  indices: tf.Tensor,
  options: InfoNceOptions = {},
): tf.Scalar {
  const fn = 'contrastiveVoxelLoss';
  assertImagePair(fn, features, augmented);
  if (features.shape[0] !== 1) fail(fn, `batch must be 1, got ${fmtShape(features.shape)}`);
  if (indices.rank !== 1 || indices.dtype !== 'int32') {
    fail(
      fn,
      `'indices' must be an int32 [N] tensor, got ${indices.dtype} ${fmtShape(indices.shape)}`,
    );
  }
  return tf.tidy(() => {
    const c = features.shape[features.rank - 1]!;
    const rows = (x: tf.Tensor) => tf.gather(tf.reshape(x, [-1, c]), indices);
    return infoNceLoss(rows(features), rows(augmented), options);
  });
}

/** Options of {@link smoothedCosineLoss}. */
export interface SmoothedCosineOptions {
  /** σ of the Gaussian ψ_σ in voxels (default 1; 0 compares the maps as they are). */
  sigma?: number;
}

/**
 * The DNS similarity of MASR-Net (Eq. 5): negated cosine similarity of Gaussian-smoothed
 * feature maps, `cosineSimilarityLoss(ψ_σ(fa), ψ_σ(fb))` with ψ_σ a per-channel Gaussian
 * filter (reflecting borders, `gaussianSmooth`). Smoothing widens the basin of each feature
 * match. Differentiable.
 *
 * @param fa `[B, ...S, C]` features (fixed).
 * @param fb same shape (warped moving).
 * @returns scalar in [0, 2] to minimise.
 */
export function smoothedCosineLoss(
  fa: tf.Tensor,
  fb: tf.Tensor,
  options: SmoothedCosineOptions = {},
): tf.Scalar {
  const fn = 'smoothedCosineLoss';
  assertImagePair(fn, fa, fb);
  const sigma = options.sigma ?? 1;
  if (!(sigma >= 0 && Number.isFinite(sigma))) fail(fn, `'sigma' must be ≥ 0, got ${sigma}`);
  return tf.tidy(() =>
    sigma > 0
      ? cosineSimilarityLoss(gaussianSmooth(fa, sigma), gaussianSmooth(fb, sigma))
      : cosineSimilarityLoss(fa, fb),
  );
}
