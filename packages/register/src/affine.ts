import {
  affineField,
  assertImagePair,
  assertTensor,
  type FeatureExtractor,
  fail,
  fmtShape,
  mulberry32,
  type RegistrationOutput,
  RegkitError,
  type Similarity,
  tf,
  warp,
} from '@regkit/core';
import {
  imagePyramid,
  levelLoss,
  levelSchedule,
  levelShape,
  PointImage,
  type SimilarityName,
  similarityName,
  stageExtractor,
} from './similarity.js';

/** The affine models of {@link registerAffine}: rotation + translation, or a full matrix + translation. */
export type AffineTransform = 'rigid' | 'affine';

/**
 * Initialisation of {@link registerAffine}: `'moments'` aligns the intensity centres of mass
 * (translation only), `'centres'` the grid centres and `'identity'` starts from `[I | 0]`
 * (both the identity, since the images share a grid).
 */
export type AffineInit = 'moments' | 'centres' | 'identity';

/** Progress report of {@link registerAffine}, once per `reportEvery` iterations and at each level's end. */
export interface AffineProgress {
  level: number;
  levels: number;
  iteration: number;
  iterations: number;
  /** Iterations done over all levels, and their total. */
  done: number;
  total: number;
  /** The similarity of the reported iteration. */
  similarity: number;
}

/** Options of {@link registerAffine}. */
export interface RegisterAffineOptions {
  /** `'affine'` (default: A, t free: 12 parameters in 3D, 6 in 2D) or `'rigid'` (rotation + translation: 6 in 3D, 3 in 2D). */
  transform?: AffineTransform;
  /**
   * The similarity (default `'mi'`, as ANTs and elastix do for their linear stages): a name —
   * `'mi'` (Parzen mutual information, {@link bins} bins, each level's images min–max
   * rescaled to [0, 1], so no normalisation is needed), `'ncc'` (global NCC), `'mse'`,
   * `'lncc'` (local NCC, window {@link window}), `'mind'` (MIND-SSC features) — or any
   * {@link Similarity}. `'mi'`, `'ncc'`, `'mse'` and `'mind'` (the mean squared difference of
   * the level's MIND features, computed once per level) are evaluated on {@link samples}
   * voxels drawn afresh each iteration (only the sampled points are interpolated); the others
   * warp the whole level image.
   */
  similarity?: SimilarityName | Similarity;
  /** A feature extractor whose maps are computed once per level and warped (dense path). */
  features?: FeatureExtractor;
  /**
   * Starting point (default `'moments'`): a name of {@link AffineInit}, or an affine
   * `[1, ndim, ndim + 1]` in the output convention (fixed voxel x ↦ moving voxel A x + t).
   */
  init?: AffineInit | tf.Tensor;
  /** Pyramid levels, coarsest first; each halves the grid (default 3). */
  levels?: number;
  /** Adam iterations per level, coarsest first (default `[150, 100, 50]`, trimmed to `levels`). */
  iterations?: readonly number[];
  /**
   * Adam learning rate in voxels of the level grid (default 0.3): every parameter is scaled so
   * that a unit step moves the image's points by about one level voxel (see the README). The
   * rate decays over each level as a cosine from `learningRate` to `learningRate / 20`.
   */
  learningRate?: number;
  /** MI histogram bins (default 32, as ANTs). */
  bins?: number;
  /** Voxels sampled per iteration for `mi`, `ncc`, `mse`, `mind` (default 4096, elastix uses 2048; all voxels when fewer). */
  samples?: number;
  /** Seed of the voxel sampler (default 0): equal seeds give equal results on a backend. */
  seed?: number;
  /** Local NCC window for `'lncc'` (default 9 at the finest level, ≤ 5 at coarser ones). */
  window?: number;
  /** Also return the inverse: the displacement of x ↦ A⁻¹(x − t) (exact). */
  inverse?: boolean;
  /** Called every `reportEvery` iterations (default 10) and at the end of each level. */
  onProgress?: (p: AffineProgress) => void;
  reportEvery?: number;
}

/** Result of {@link registerAffine}; the caller owns (and disposes) the tensors. */
export interface RegisterAffineResult extends RegistrationOutput {
  /**
   * `[1, ndim, ndim + 1]` float32: fixed voxel x ↦ moving voxel A x + t (rows per output
   * axis in axis order, last column t; origin at voxel 0, not the centre).
   */
  affine: tf.Tensor;
  /** `[1, ...S, ndim]`: u(x) = A x + t − x, so `warp(moving, forward)` ≈ fixed. */
  forward: tf.Tensor;
  /** `[1, ...S, ndim]` on the moving grid: A⁻¹(y − t) − y, when `inverse` was asked. */
  inverse?: tf.Tensor;
  /** Final similarity (at the last iteration) and iterations of each level. */
  levels: { shape: number[]; similarity: number; iterations: number }[];
}

/** An affine in centred full-resolution voxel coordinates: y − c = A (x − c) + t. */
interface CentredAffine {
  a: Float64Array; // nd × nd, row-major
  t: Float64Array; // nd
}

/**
 * The displacement field of an affine in the output convention of {@link registerAffine}:
 * u(x) = A x + t − x at every voxel x of the grid (voxel centres at integer indices), so
 * `warp(moving, affineDisplacement(affine, S))(x) = moving(A x + t)`. Differentiable with
 * respect to `affine` (it is `affineField` of core, whose matrices act about the centre
 * c = (S − 1)/2, with t_c = t + A c − c).
 *
 * @param affine `[B, ndim, ndim + 1]`: rows per output axis, last column t, in voxels.
 * @param spatialShape `[H, W]` or `[D, H, W]`.
 * @returns `[B, ...spatialShape, ndim]`.
 */
export function affineDisplacement(affine: tf.Tensor, spatialShape: readonly number[]): tf.Tensor {
  const fn = 'affineDisplacement';
  assertTensor(fn, 'affine', affine);
  const nd = spatialShape.length;
  if (affine.rank !== 3 || affine.shape[1] !== nd || affine.shape[2] !== nd + 1) {
    fail(
      fn,
      `'affine' must be [B, ${nd}, ${nd + 1}] for a ${nd}D grid, got ${fmtShape(affine.shape)}`,
    );
  }
  return tf.tidy(() => {
    const b = affine.shape[0]!;
    const a = tf.slice(affine, [0, 0, 0], [b, nd, nd]);
    const t = tf.slice(affine, [0, 0, nd], [b, nd, 1]);
    const c = tf.tensor(
      spatialShape.map((s) => (s - 1) / 2),
      [1, nd, 1],
    );
    const tc = tf.sub(tf.add(t, tf.matMul(a, tf.broadcastTo(c, [b, nd, 1]))), c);
    return affineField(tf.concat([a, tc], 2), spatialShape);
  });
}

/**
 * The inverse of affines in the output convention: [A | t] ↦ [A⁻¹ | −A⁻¹ t], so
 * x ↦ A x + t is undone by y ↦ A⁻¹ (y − t). Throws for a singular A.
 *
 * @param affine `[B, ndim, ndim + 1]`.
 * @returns `[B, ndim, ndim + 1]` float32.
 */
export function invertAffine(affine: tf.Tensor): tf.Tensor {
  const fn = 'invertAffine';
  assertTensor(fn, 'affine', affine);
  const [b, nd, cols] = affine.shape;
  if (affine.rank !== 3 || !(nd === 2 || nd === 3) || cols !== nd + 1) {
    fail(fn, `'affine' must be [B, 2, 3] or [B, 3, 4], got ${fmtShape(affine.shape)}`);
  }
  const v = affine.dataSync();
  const out = new Float32Array(v.length);
  for (let i = 0; i < b!; i++) {
    const m = v.subarray(i * nd! * cols!, (i + 1) * nd! * cols!);
    const a = new Float64Array(nd! * nd!);
    for (let r = 0; r < nd!; r++) for (let c = 0; c < nd!; c++) a[r * nd! + c] = m[r * cols! + c]!;
    const inv = invert(a, nd!);
    if (!inv) fail(fn, `the matrix of batch item ${i} is singular`);
    for (let r = 0; r < nd!; r++) {
      let s = 0;
      for (let c = 0; c < nd!; c++) {
        out[i * nd! * cols! + r * cols! + c] = inv![r * nd! + c]!;
        s += inv![r * nd! + c]! * m[c * cols! + nd!]!;
      }
      out[i * nd! * cols! + r * cols! + nd!] = -s;
    }
  }
  return tf.tensor3d(out, [b!, nd!, cols!]);
}

/** Gauss–Jordan inverse of an n×n row-major matrix with partial pivoting; null when singular. */
function invert(a: Float64Array, n: number): Float64Array | null {
  const m = Float64Array.from(a);
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) inv[i * n + i] = 1;
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r * n + c]!) > Math.abs(m[p * n + c]!)) p = r;
    const pivot = m[p * n + c]!;
    if (!(Math.abs(pivot) > 1e-12)) return null;
    for (let k = 0; k < n; k++) {
      [m[c * n + k], m[p * n + k]] = [m[p * n + k]!, m[c * n + k]!];
      [inv[c * n + k], inv[p * n + k]] = [inv[p * n + k]!, inv[c * n + k]!];
    }
    for (let k = 0; k < n; k++) {
      m[c * n + k] = m[c * n + k]! / pivot;
      inv[c * n + k] = inv[c * n + k]! / pivot;
    }
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = m[r * n + c]!;
      if (f === 0) continue;
      for (let k = 0; k < n; k++) {
        m[r * n + k] = m[r * n + k]! - f * m[c * n + k]!;
        inv[r * n + k] = inv[r * n + k]! - f * inv[c * n + k]!;
      }
    }
  }
  return inv;
}

/** Intensity centre of mass (voxel coordinates) of `[1, ...S, C]`, weights x − min(x) summed over channels. */
function centreOfMass(image: tf.Tensor): number[] {
  const spatial = image.shape.slice(1, -1);
  const nd = spatial.length;
  const c = image.shape[image.rank - 1]!;
  const v = image.dataSync();
  let lo = Number.POSITIVE_INFINITY;
  for (let i = 0; i < v.length; i++) if (v[i]! < lo) lo = v[i]!;
  const sum = new Float64Array(nd);
  let total = 0;
  const idx = new Array<number>(nd).fill(0);
  const n = v.length / c;
  for (let p = 0; p < n; p++) {
    let w = 0;
    for (let k = 0; k < c; k++) w += v[p * c + k]! - lo;
    if (w > 0) {
      total += w;
      for (let k = 0; k < nd; k++) sum[k]! += w * idx[k]!;
    }
    for (let a = nd - 1; a >= 0; a--) {
      if (++idx[a]! < spatial[a]!) break;
      idx[a] = 0;
    }
  }
  return spatial.map((s, k) => (total > 0 ? sum[k]! / total : (s - 1) / 2));
}

/** The centred affine of an output-convention `[1, nd, nd + 1]` tensor: t_c = t + A c − c. */
function centredOf(affine: tf.Tensor, spatial: readonly number[]): CentredAffine {
  const nd = spatial.length;
  const v = affine.dataSync();
  const a = new Float64Array(nd * nd);
  const t = new Float64Array(nd);
  const c = spatial.map((s) => (s - 1) / 2);
  for (let r = 0; r < nd; r++) {
    let ac = 0;
    for (let k = 0; k < nd; k++) {
      a[r * nd + k] = v[r * (nd + 1) + k]!;
      ac += v[r * (nd + 1) + k]! * c[k]!;
    }
    t[r] = v[r * (nd + 1) + nd]! + ac - c[r]!;
  }
  return { a, t };
}

/** The output-convention `[1, nd, nd + 1]` tensor of a centred affine: t = t_c + c − A c. */
function originOf(m: CentredAffine, spatial: readonly number[]): tf.Tensor {
  const nd = spatial.length;
  const c = spatial.map((s) => (s - 1) / 2);
  const out = new Float32Array(nd * (nd + 1));
  for (let r = 0; r < nd; r++) {
    let ac = 0;
    for (let k = 0; k < nd; k++) {
      out[r * (nd + 1) + k] = m.a[r * nd + k]!;
      ac += m.a[r * nd + k]! * c[k]!;
    }
    out[r * (nd + 1) + nd] = m.t[r]! + c[r]! - ac;
  }
  return tf.tensor3d(out, [1, nd, nd + 1]);
}

/** Coefficients of sin θ/θ and (1 − cos θ)/θ² as series in θ² (exact to float32 for θ ≤ π). */
const SINC = [1, -1 / 6, 1 / 120, -1 / 5040, 1 / 362880, -1 / 39916800, 1 / 6227020800];
const COSC = [1 / 2, -1 / 24, 1 / 720, -1 / 40320, 1 / 3628800, -1 / 479001600, 1 / 87178291200];

/** Σ coef[k] x^k by Horner, on a scalar tensor. */
function series(x: tf.Tensor, coef: readonly number[]): tf.Tensor {
  let s: tf.Tensor = tf.scalar(coef[coef.length - 1]!);
  for (let k = coef.length - 2; k >= 0; k--) s = tf.add(tf.mul(s, x), coef[k]!);
  return s;
}

/**
 * The rotation exp([w]×) `[3, 3]` of an axis-angle vector w `[3]` (Rodrigues:
 * I + (sin θ/θ) K + ((1 − cos θ)/θ²) K², K = [w]×, θ = |w|), smooth at w = 0.
 */
function rodrigues(w: tf.Tensor): tf.Tensor {
  // K = [[0, −w2, w1], [w2, 0, −w0], [−w1, w0, 0]] as w · E
  const e = tf.tensor2d(
    [
      [0, 0, 0, 0, 0, -1, 0, 1, 0],
      [0, 0, 1, 0, 0, 0, -1, 0, 0],
      [0, -1, 0, 1, 0, 0, 0, 0, 0],
    ],
    [3, 9],
  );
  const k = tf.reshape(tf.matMul(tf.reshape(w, [1, 3]), e), [3, 3]);
  const theta2 = tf.sum(tf.square(w));
  return tf.add(
    tf.add(tf.eye(3), tf.mul(series(theta2, SINC), k)),
    tf.mul(series(theta2, COSC), tf.matMul(k, k)),
  );
}

/**
 * Affine registration of two images on one grid: multi-resolution Adam on the parameters of
 * x ↦ A x + t (fixed voxel to moving voxel), `'rigid'` (A a rotation: 1 angle in 2D, an
 * axis-angle vector in 3D) or `'affine'` (A free), about the fixed grid's centre, from the
 * intensity centres of mass. Minimises similarity(fixed_ℓ, moving_ℓ ∘ (A x + t)) on each
 * level of a `resizeImage` pyramid, coarsest first. Parameters are scaled so one learning
 * rate in voxels suits rotations, matrix entries and translations (see the README).
 * Browser-safe: no Node.js built-ins.
 *
 * @param fixed `[1, ...S, C]`.
 * @param moving `[1, ...S, C]`, same shape (resample with `@regkit/io` first).
 * @returns `{ affine [1, ndim, ndim + 1], forward [1, ...S, ndim], inverse?, levels }` (a `RegistrationOutput`).
 *
 * @example
 * ```ts
 * const { affine, forward } = await registerAffine(fixed, moving, { transform: 'rigid' });
 * const moved = warp(moving, forward); // moving(A x + t) on the fixed grid
 * ```
 */
export async function registerAffine(
  fixed: tf.Tensor,
  moving: tf.Tensor,
  options: RegisterAffineOptions = {},
): Promise<RegisterAffineResult> {
  return (await fitAffine(fixed, moving, options, true)) as RegisterAffineResult;
}

/**
 * {@link registerAffine}; without `withFields` it returns the affine and the levels only
 * (no full-resolution `forward`/`inverse` fields: the deformable stage does not need them).
 * @internal
 */
export async function fitAffine(
  fixed: tf.Tensor,
  moving: tf.Tensor,
  options: RegisterAffineOptions,
  withFields: boolean,
  shared?: ReadonlyArray<readonly [tf.Tensor, tf.Tensor]>,
  featureCache?: Map<tf.Tensor, tf.Tensor>,
): Promise<Omit<RegisterAffineResult, 'forward'> & { forward?: tf.Tensor }> {
  const fn = 'registerAffine';
  const nd = assertImagePair(fn, fixed, moving);
  if (fixed.shape[0] !== 1) fail(fn, `batch must be 1, got ${fmtShape(fixed.shape)}`);
  const transform = options.transform ?? 'affine';
  if (transform !== 'rigid' && transform !== 'affine') {
    fail(fn, `'transform' must be rigid or affine, got '${transform}'`);
  }
  const similarity = options.similarity ?? 'mi';
  const named = similarityName(fn, similarity);
  const extractor = stageExtractor(fn, named, options.features);
  const init = options.init ?? 'moments';
  if (typeof init === 'string') {
    if (!['moments', 'centres', 'identity'].includes(init)) {
      fail(
        fn,
        `'init' must be moments, centres, identity or a [1, ${nd}, ${nd + 1}] affine, got '${init}'`,
      );
    }
  } else {
    assertTensor(fn, 'init', init);
    if (
      init.rank !== 3 ||
      init.shape[0] !== 1 ||
      init.shape[1] !== nd ||
      init.shape[2] !== nd + 1
    ) {
      fail(fn, `'init' must be a [1, ${nd}, ${nd + 1}] affine, got ${fmtShape(init.shape)}`);
    }
  }
  const { levels: nLevels, iterations } = levelSchedule(fn, options.levels, options.iterations, {
    coarse: 150,
    middle: 100,
    finest: 50,
  });
  const lr = options.learningRate ?? 0.3;
  if (!(lr > 0) || !Number.isFinite(lr))
    fail(fn, `'learningRate' must be a finite number > 0, got ${lr}`);
  const bins = options.bins ?? 32;
  if (!Number.isInteger(bins) || bins < 2) fail(fn, `'bins' must be an integer ≥ 2, got ${bins}`);
  const samples = options.samples ?? 4096;
  if (!Number.isInteger(samples) || samples < 64) {
    fail(fn, `'samples' must be an integer ≥ 64, got ${samples}`);
  }
  const window = options.window ?? 9;
  const reportEvery = options.reportEvery ?? 10;
  const rand = mulberry32(options.seed ?? 0);
  // pointwise similarities: evaluated at sampled points, only those points interpolated
  // (`'mind'` too: the mean squared difference of feature maps is a mean over voxels, so its
  // features are computed once per level and only the sampled points of them are warped)
  const sampled =
    (extractor === null && (named === 'mi' || named === 'ncc' || named === 'mse')) ||
    (named === 'mind' && !options.features);

  const spatial = fixed.shape.slice(1, -1);
  let state: CentredAffine;
  if (typeof init !== 'string') state = centredOf(init, spatial);
  else {
    state = { a: new Float64Array(nd * nd), t: new Float64Array(nd) };
    for (let k = 0; k < nd; k++) state.a[k * nd + k] = 1;
    if (init === 'moments') {
      const cf = centreOfMass(fixed);
      const cm = centreOfMass(moving);
      for (let k = 0; k < nd; k++) state.t[k] = cm[k]! - cf[k]!;
    }
  }

  const shapes = Array.from({ length: nLevels }, (_, level) =>
    levelShape(spatial, 2 ** (nLevels - 1 - level)),
  );
  // the pyramid of the deformable stage (`shared`, same `resizeImage` levels) when it holds
  // every level that has iterations: it is used as it is (never disposed here), and this
  // stage builds no pyramid of its own
  const sharedAt = (shape: readonly number[]) =>
    shared?.find((pair) => tf.util.arraysEqual(pair[0].shape.slice(1, -1), [...shape]));
  const useShared =
    shared !== undefined && shapes.every((shape, l) => iterations[l] === 0 || sharedAt(shape));
  const keep = new Set<tf.Tensor>(useShared ? shared!.flat() : []);
  /** Disposes what this stage owns (not the shared pyramid's images). */
  const drop = (ts: readonly tf.Tensor[]) => {
    for (const t of ts) if (!keep.has(t)) t.dispose();
  };
  const pyramid: Array<[tf.Tensor, tf.Tensor] | undefined> = useShared
    ? shapes.map((shape, l) => {
        const pair = iterations[l] === 0 ? undefined : sharedAt(shape);
        return pair ? [pair[0], pair[1]] : undefined;
      })
    : imagePyramid(fixed, moving, shapes);
  const total = iterations.reduce((a, b) => a + b, 0);
  let done = 0;
  const report: RegisterAffineResult['levels'] = [];
  const nParams = (transform === 'rigid' ? (nd === 2 ? 1 : 3) : nd * nd) + nd;

  try {
    for (let level = 0; level < nLevels; level++) {
      const shape = shapes[level]!;
      if (iterations[level] === 0) {
        // nothing to optimise here: no features or similarity are computed (a 0-iteration
        // finest level of a large image would otherwise extract them at full resolution)
        if (pyramid[level]) drop(pyramid[level]!);
        pyramid[level] = undefined;
        report.push({ shape, similarity: Number.NaN, iterations: 0 });
        continue;
      }
      // full-resolution voxels per level voxel, per axis: x − c = D (x_ℓ − c_ℓ)
      const f = spatial.map((s, k) => (s > 1 ? (s - 1) / (shape[k]! - 1) : 1));
      const cl = shape.map((s) => (s - 1) / 2);
      // level-grid start: B0 = D⁻¹ A D, s0 = D⁻¹ t
      const b0 = new Float32Array(nd * nd);
      const s0 = new Float32Array(nd);
      for (let r = 0; r < nd; r++) {
        s0[r] = state.t[r]! / f[r]!;
        for (let k = 0; k < nd; k++) b0[r * nd + k] = (state.a[r * nd + k]! * f[k]!) / f[r]!;
      }
      // unit scales: a unit of m_ij moves the face of axis j by one level voxel along i; a unit
      // of ω turns a point at the rms radius ρ by one level voxel
      const colScale = cl.map((c) => 1 / Math.max(c, 1));
      const rho = Math.max(1, Math.sqrt(cl.reduce((a, c) => a + c * c, 0) / nd));
      const levelMatrix = (q: tf.Tensor): tf.Tensor =>
        tf.tidy(() => {
          const b0t = tf.tensor2d(b0, [nd, nd]);
          const nRot = nParams - nd;
          const tau = tf.slice(q, [nRot], [nd]);
          let b: tf.Tensor;
          if (transform === 'affine') {
            const m = tf.reshape(tf.slice(q, [0], [nd * nd]), [nd, nd]);
            b = tf.add(b0t, tf.mul(m, tf.tensor1d(colScale)));
          } else {
            let rot: tf.Tensor;
            if (nd === 2) {
              const angle = tf.div(tf.slice(q, [0], [1]), rho);
              rot = tf.add(
                tf.mul(tf.cos(angle), tf.eye(2)),
                tf.mul(tf.sin(angle), tf.tensor2d([0, -1, 1, 0], [2, 2])),
              );
            } else rot = rodrigues(tf.div(tf.slice(q, [0], [3]), rho));
            // D⁻¹ R D: (R)_ij f_j / f_i
            const dd = tf.tensor2d(
              Array.from({ length: nd * nd }, (_, i) => f[i % nd]! / f[Math.floor(i / nd)]!),
              [nd, nd],
            );
            b = tf.matMul(tf.mul(rot, dd), b0t);
          }
          return tf.concat([b, tf.reshape(tf.add(tf.tensor1d(s0), tau), [nd, 1])], 1);
        });

      let [fImage, mImage] = pyramid[level]!;
      if (extractor) {
        const [ff, mm] = tf.tidy(() => [extractor.apply(fImage), extractor.apply(mImage)]);
        if (featureCache && keep.has(fImage) && keep.has(mImage)) {
          // the shared pyramid's features: left to the deformable stage, which owns them
          featureCache.set(fImage, ff!);
          featureCache.set(mImage, mm!);
          keep.add(ff!);
          keep.add(mm!);
        }
        drop([fImage, mImage]);
        [fImage, mImage] = [ff!, mm!];
      } else if (named === 'mi') {
        // MI bins intensities in [0, 1]: min–max rescale each image (MI is invariant to it)
        const [ff, mm] = tf.tidy(() =>
          [fImage, mImage].map((x) => {
            const lo = tf.min(x);
            return tf.div(tf.sub(x, lo), tf.maximum(tf.sub(tf.max(x), lo), 1e-12));
          }),
        );
        drop([fImage, mImage]);
        [fImage, mImage] = [ff!, mm!];
      }
      pyramid[level] = [fImage, mImage];
      const channels = fImage.shape[fImage.rank - 1]!;
      const voxels = shape.reduce((a, b) => a * b, 1);
      const loss = levelLoss(fn, named, similarity, {
        window: level === nLevels - 1 ? window : Math.min(window, 5),
        bins,
      });
      const fData = sampled ? fImage.dataSync() : null;
      // the moving level image (or features) read once: each iteration interpolates its points
      const mPoints = sampled ? new PointImage(mImage) : null;

      /** Points of an iteration: [centred coords X [N, nd], voxel coords P = X + c [N, nd], fixed values]. */
      const drawPoints = (): [tf.Tensor, tf.Tensor, tf.Tensor] => {
        const n = Math.min(samples, voxels);
        const x = new Float32Array(n * nd);
        const p = new Float32Array(n * nd);
        const fv = new Float32Array(n * channels);
        for (let i = 0; i < n; i++) {
          let flat = voxels > samples ? Math.floor(rand() * voxels) : i;
          for (let k = 0; k < channels; k++) fv[i * channels + k] = fData![flat * channels + k]!;
          for (let k = nd - 1; k >= 0; k--) {
            const coord = flat % shape[k]!;
            flat = (flat - coord) / shape[k]!;
            x[i * nd + k] = coord - cl[k]!;
            p[i * nd + k] = coord;
          }
        }
        return [
          tf.tensor2d(x, [n, nd]),
          tf.tensor2d(p, [n, nd]),
          tf.tensor4d(fv, [1, n, 1, channels]),
        ];
      };
      let fixedPoints: [tf.Tensor, tf.Tensor, tf.Tensor] | null =
        sampled && voxels <= samples ? drawPoints() : null;

      const objective = (q: tf.Tensor): tf.Scalar => {
        const mat = levelMatrix(q);
        if (!sampled) {
          const field = affineField(tf.expandDims(mat, 0), shape);
          return loss(fImage, warp(mImage, field), null);
        }
        const [x, p, fv] = fixedPoints ?? pts!;
        const n = x.shape[0]!;
        const b = tf.slice(mat, [0, 0], [nd, nd]);
        const s = tf.reshape(tf.slice(mat, [0, nd], [nd, 1]), [1, nd]);
        // y = X Bᵀ + s + c = P + X (B − I)ᵀ + s; only the points' corners are read (O(N))
        const y = tf.add(tf.add(p, tf.matMul(x, tf.sub(b, tf.eye(nd)), false, true)), s);
        const w = tf.reshape(mPoints!.at(y), [1, n, 1, channels]);
        return loss(fv, w, null);
      };
      let pts: [tf.Tensor, tf.Tensor, tf.Tensor] | null = null;

      const q = new Float64Array(nParams);
      const m1 = new Float64Array(nParams);
      const m2 = new Float64Array(nParams);
      const [beta1, beta2, eps] = [0.9, 0.999, 1e-8];
      const nIt = iterations[level]!;
      let simValue = Number.NaN;
      for (let it = 0; it < nIt; it++) {
        if (sampled && !fixedPoints) pts = drawPoints();
        const qt = tf.tensor1d(Float32Array.from(q));
        const { value, grad } = tf.tidy(() => tf.valueAndGrad(objective)(qt));
        qt.dispose();
        if (pts) tf.dispose(pts);
        pts = null;
        const g = (await grad.data()) as Float32Array;
        simValue = (await value.data())[0]!;
        tf.dispose([value, grad]);
        if (!Number.isFinite(simValue)) {
          throw new RegkitError(
            `${fn}(): the similarity became ${simValue} at level ${level + 1}, iteration ${it + 1}`,
          );
        }
        // Adam with a cosine decay from lr to lr / 20 over the level
        const rate =
          lr * (0.05 + 0.95 * 0.5 * (1 + Math.cos((Math.PI * it) / Math.max(1, nIt - 1))));
        const c1 = 1 - beta1 ** (it + 1);
        const c2 = 1 - beta2 ** (it + 1);
        for (let i = 0; i < nParams; i++) {
          m1[i] = beta1 * m1[i]! + (1 - beta1) * g[i]!;
          m2[i] = beta2 * m2[i]! + (1 - beta2) * g[i]! * g[i]!;
          q[i] = q[i]! - (rate * (m1[i]! / c1)) / (Math.sqrt(m2[i]! / c2) + eps);
        }
        done++;
        if ((it + 1) % reportEvery === 0 || it === nIt - 1) {
          options.onProgress?.({
            level: level + 1,
            levels: nLevels,
            iteration: it + 1,
            iterations: nIt,
            done,
            total,
            similarity: simValue,
          });
        }
      }
      if (fixedPoints) tf.dispose(fixedPoints);
      fixedPoints = null;
      // back to full resolution: A = D B D⁻¹, t = D s
      const qt = tf.tensor1d(Float32Array.from(q));
      const matT = levelMatrix(qt);
      const mat = matT.dataSync();
      tf.dispose([qt, matT]);
      for (let r = 0; r < nd; r++) {
        state.t[r] = mat[r * (nd + 1) + nd]! * f[r]!;
        for (let k = 0; k < nd; k++) state.a[r * nd + k] = (mat[r * (nd + 1) + k]! * f[r]!) / f[k]!;
      }
      drop(pyramid[level]!);
      pyramid[level] = undefined;
      report.push({ shape, similarity: simValue, iterations: nIt });
    }
  } finally {
    for (const pair of pyramid) if (pair) drop(pair);
  }
  const affine = originOf(state, spatial);
  if (!withFields) return { affine, levels: report };
  const forward = affineDisplacement(affine, spatial);
  if (!options.inverse) return { affine, forward, levels: report };
  const inv = invertAffine(affine);
  const inverse = affineDisplacement(inv, spatial);
  inv.dispose();
  return { affine, forward, inverse, levels: report };
}

/**
 * An output-convention affine `[1, nd, nd + 1]` of the full grid `spatial`, expressed on a
 * pyramid grid `shape` (same extent, corners aligned, x − c = D (x_ℓ − c_ℓ)): its dense
 * displacement `[1, ...shape, nd]` there and its linear part B = D⁻¹ A D `[nd, nd]`, so the
 * map x_ℓ ↦ a(x_ℓ + u(x_ℓ)) has the displacement `field + u Bᵀ` on that grid.
 */
export function affineOnGrid(
  affine: tf.Tensor,
  spatial: readonly number[],
  shape: readonly number[],
): { field: tf.Tensor; linear: tf.Tensor } {
  const nd = spatial.length;
  const m = centredOf(affine, spatial);
  const f = spatial.map((s, k) => (s > 1 ? (s - 1) / (shape[k]! - 1) : 1));
  const rows: number[][] = [];
  const linear = new Float32Array(nd * nd);
  for (let r = 0; r < nd; r++) {
    const row: number[] = [];
    for (let k = 0; k < nd; k++) {
      linear[r * nd + k] = (m.a[r * nd + k]! * f[k]!) / f[r]!;
      row.push(linear[r * nd + k]!);
    }
    row.push(m.t[r]! / f[r]!);
    rows.push(row);
  }
  return { field: affineField([rows], shape), linear: tf.tensor2d(linear, [nd, nd]) };
}
