import {
  assertImagePair,
  composeFields,
  type FeatureExtractor,
  fail,
  fmtShape,
  gaussianSmooth,
  integrateVelocity,
  integrateVelocityWithVjp,
  type RegistrationOutput,
  RegkitError,
  resizeField,
  resizeFieldVjp,
  type Similarity,
  tf,
  warp,
} from '@regkit/core';
import { invertField } from '@regkit/invertible';
import { diffusionLoss } from '@regkit/losses';
import {
  type AffineProgress,
  type AffineTransform,
  affineDisplacement,
  affineOnGrid,
  fitAffine,
  invertAffine,
  type RegisterAffineOptions,
  type RegisterAffineResult,
} from './affine.js';
import {
  imagePyramid,
  levelLoss,
  levelSchedule,
  levelShape,
  PointImage,
  type SimilarityName,
  sampleVoxels,
  similarityName,
  stageExtractor,
  warpAtVoxels,
} from './similarity.js';

export type { SimilarityName } from './similarity.js';

/** How the deformation is parameterised. */
export type TransformModel = 'velocity' | 'displacement';

/**
 * Progress report of {@link registerImages}, once per `reportEvery` iterations: the affine
 * stage's fields (level, iterations, done/total for progress bars, the similarity) and the
 * (unweighted) regularisation term of the last reported iteration.
 */
export interface RegistrationProgress extends AffineProgress {
  regularisation: number;
}

/** Options of {@link registerImages}. */
export interface RegisterImagesOptions {
  /**
   * The similarity (default `'lncc'`): a name — `'lncc'` (local NCC, window {@link window}),
   * `'ncc'` (global NCC),
   * `'mi'` (Parzen mutual information on sampled voxels), `'mind'` (MIND-SSC descriptors
   * computed once per level and warped, compared by mean squared difference), `'mse'` — or
   * any {@link Similarity} `(fixed, moving) => scalar`. With {@link features} it compares
   * feature maps (default: mean squared difference).
   */
  similarity?: SimilarityName | Similarity;
  /**
   * A feature extractor (MIND-SSC, a network encoder, DNS): the features of the fixed and of
   * the moving image are computed once per pyramid level and the moving features are
   * warped each iteration (as convexAdam does), so the extractor runs twice per level.
   */
  features?: FeatureExtractor;
  /** Deformation model (default `'velocity'`: diffeomorphic scaling and squaring). */
  transform?: TransformModel;
  /** Pyramid levels, coarsest first; each halves the grid (default 3). */
  levels?: number;
  /** Adam iterations per level, coarsest first (default `[150, 100, 60]`, trimmed to `levels`). */
  iterations?: readonly number[];
  /**
   * Adam learning rate in voxels of the parameter grid (default 0.1 for mi; else 0.3
   * velocity, 0.5 displacement): one value, or one per level, coarsest first.
   */
  learningRate?: number | readonly number[];
  /**
   * λ, the weight of the diffusion regulariser on the parameter field (default 2 for mi, 0.2
   * mse, else 1): one value, or one per level, coarsest first.
   */
  regularisationWeight?: number | readonly number[];
  /**
   * With {@link features}: compute the features once, on the full-resolution images, and
   * resample the feature maps to each level (MASR-Net's IO, Mok et al. 2024, Supp. B.1)
   * instead of extracting them from each level's image (default false).
   */
  featuresOnce?: boolean;
  /** Local NCC window at the finest level (default 9; coarser levels use at most 5). */
  window?: number;
  /** MI bins (default 16). */
  bins?: number;
  /**
   * `mi` and `mind`: voxels sampled at random each iteration (default 32768; `Infinity`:
   * every voxel; all voxels when the level has fewer), as elastix's random sampler does. Only the sampled points of the moving image (or of its 12 MIND
   * channels) are interpolated, so an iteration's similarity costs O(samples), not O(voxels).
   */
  samples?: number;
  /** Seed of the voxel sampler of `mi` and `mind` (default 0): equal seeds give equal results. */
  seed?: number;
  /** The parameter field lives on the level grid divided by this factor (default 2 in 3D, 1 in 2D). */
  fieldDownsample?: number;
  /** Scaling-and-squaring steps (default 7). */
  integrationSteps?: number;
  /** Gaussian σ (in parameter voxels) applied to the parameter field before use (default 3 for mi, else 1). */
  fieldSmoothing?: number;
  /**
   * Skip the finest `skipFinest` levels: the optimisation stops at a coarser grid and the
   * result is upsampled (default 0). Trades accuracy for time on large images.
   */
  skipFinest?: number;
  /**
   * Dispose `fixed` and `moving` as soon as they are no longer needed (once the affine stage
   * has run and the pyramid is built), so that a caller passing copies it owns (e.g. the
   * normalised images) does not hold two full-resolution images through the optimisation
   * (default false: the inputs are left as they are).
   */
  disposeInputs?: boolean;
  /**
   * The most voxels a level's grid may have (default 2²² ≈ 4.2 M): a level whose grid would
   * be larger (the finest level of a large 3D image) is optimised on a grid shrunk uniformly
   * to fit, and the field is upsampled to the full grid at the end. It bounds the memory of
   * an iteration (the warped image, the loss and their gradients), which otherwise grows with
   * the image. `Infinity` optimises at the full grid.
   */
  maxVoxels?: number;
  /**
   * Return the full-resolution stationary `velocity` (velocity model; default true). A caller
   * that only needs the displacement passes false and saves a full-resolution field.
   */
  returnVelocity?: boolean;
  /**
   * Also return the inverse deformation: exp(−v) for velocity fields (exact), the
   * deformation inversion layer `invertField` (fixed point) for displacement fields.
   */
  inverse?: boolean;
  /**
   * The affine stage run before the deformable one (default `'affine'`, as ANTs'
   * `antsRegistrationSyN` runs its linear stages first): `'affine'` or `'rigid'` runs
   * {@link registerAffine}, a `[1, ndim, ndim + 1]` tensor (fixed voxel x ↦ moving voxel
   * A x + t) is used as it is, `false` skips it (deformable only). The deformable field u is
   * then optimised on top of it: the moving image is sampled once, at a(x + u(x)).
   */
  affine?: AffineTransform | false | tf.Tensor;
  /**
   * Options of the affine stage ({@link RegisterAffineOptions}). Its similarity defaults to
   * `'mi'` for `mi`, global `'ncc'` for `lncc`, `ncc` and `mse`, `'mind'` for `mind`, and to
   * the same `similarity` and `features` for a user similarity or feature extractor.
   */
  affineOptions?: Omit<RegisterAffineOptions, 'transform' | 'inverse'>;
  /** Called every `reportEvery` iterations (default 10) and at the end of each level. */
  onProgress?: (p: RegistrationProgress) => void;
  reportEvery?: number;
}

/** Result of {@link registerImages}; the caller owns (and disposes) the tensors. */
export interface RegisterImagesResult extends RegistrationOutput {
  /** Displacement `[1, ...S, ndim]` on the fixed grid: `warp(moving, forward)` ≈ fixed. */
  forward: tf.Tensor;
  /** Inverse displacement on the moving grid, when `inverse` was asked. */
  inverse?: tf.Tensor;
  /** The stationary velocity `[1, ...S, ndim]` (velocity model), on the fixed grid. */
  velocity?: tf.Tensor;
  /**
   * The affine part `[1, ndim, ndim + 1]` (fixed voxel x ↦ moving voxel A x + t), when an
   * affine stage ran or was given; `forward` includes it: forward(x) = a(x + u(x)) − x.
   */
  affine?: tf.Tensor;
  /** Final similarity and regularisation values of each level of the deformable stage. */
  levels: { shape: number[]; similarity: number; regularisation: number; iterations: number }[];
  /** The affine stage's report, when it ran. */
  affineLevels?: RegisterAffineResult['levels'];
}

/**
 * Pairwise registration with no trained model: an affine stage ({@link registerAffine},
 * unless `affine: false`), then multi-resolution instance optimisation (Adam on a stationary
 * velocity field integrated by scaling and squaring, or on a displacement field) of
 *
 *   similarity(F(fixed), F(moving) ∘ a ∘ φ) + λ · diffusion(parameters),
 *
 * in the fixed image's voxel grid, with F the identity or a {@link FeatureExtractor} whose
 * maps are computed once per level. Both images must share one grid (resample with
 * `@regkit/io` first) and should be intensity-normalised to [0, 1] ({@link normalizeIntensity})
 * for `mi`. Browser-safe: no Node.js built-ins.
 *
 * @param fixed `[1, ...S, C]`.
 * @param moving `[1, ...S, C]`, same shape.
 * With the affine a(x) = A x + t and φ = id + u, `forward(x) = a(x + u(x)) − x = (A − I) x + t
 * + A u(x)` (computed exactly, so the moving image is resampled once), `inverse(y) =
 * φ⁻¹(a⁻¹(y)) − y` = `composeFields(u⁻¹, a⁻¹ − id)`, and `velocity` is the deformable part's.
 *
 * @returns `{ forward, inverse?, velocity?, affine?, levels, affineLevels? }` (a `RegistrationOutput`).
 *
 * @example
 * ```ts
 * const { forward } = await registerImages(fixed, moving, { similarity: 'mi' });
 * const moved = warp(moving, forward);
 * ```
 */
export async function registerImages(
  fixed: tf.Tensor,
  moving: tf.Tensor,
  options: RegisterImagesOptions = {},
): Promise<RegisterImagesResult> {
  const fn = 'registerImages';
  const nd = assertImagePair(fn, fixed, moving);
  if (fixed.shape[0] !== 1) fail(fn, `batch must be 1, got ${fmtShape(fixed.shape)}`);
  const similarity = options.similarity ?? 'lncc';
  const named = similarityName(fn, similarity);
  const extractor = stageExtractor(fn, named, options.features);
  const model = options.transform ?? 'velocity';
  if (model !== 'velocity' && model !== 'displacement') {
    fail(fn, `'transform' must be velocity or displacement, got '${model}'`);
  }
  const { levels: nLevels, iterations } = levelSchedule(fn, options.levels, options.iterations, {
    coarse: 150,
    middle: 100,
    finest: 60,
  });
  const skip = options.skipFinest ?? 0;
  if (!Number.isInteger(skip) || skip < 0 || skip >= nLevels) {
    fail(fn, `'skipFinest' must be an integer in [0, ${nLevels - 1}], got ${skip}`);
  }
  // defaults tuned on the demo problems: MI's gradient is noisy, so it gets a smaller step
  // and a smoother, more regularised field
  const mi = named === 'mi';
  const lrs = perLevel(
    fn,
    'learningRate',
    options.learningRate ?? (mi ? 0.1 : model === 'velocity' ? 0.3 : 0.5),
    nLevels,
  );
  const lambdas = perLevel(
    fn,
    'regularisationWeight',
    options.regularisationWeight ?? (mi ? 2 : named === 'mse' ? 0.2 : 1),
    nLevels,
  );
  const window = options.window ?? 9;
  const bins = options.bins ?? 16;
  const samples = options.samples ?? 32768;
  if (!(samples === Infinity || (Number.isInteger(samples) && samples >= 64))) {
    fail(fn, `'samples' must be an integer ≥ 64 or Infinity, got ${samples}`);
  }
  let seed = options.seed ?? 0;
  const down = options.fieldDownsample ?? (nd === 3 ? 2 : 1);
  const steps = options.integrationSteps ?? 7;
  const smoothing = options.fieldSmoothing ?? (mi ? 3 : 1);
  const reportEvery = options.reportEvery ?? 10;
  for (const [name, v] of [
    ['fieldDownsample', down],
    ['fieldSmoothing', smoothing],
  ] as const) {
    if (!(v >= 0) || !Number.isFinite(v))
      fail(fn, `'${name}' must be a finite number ≥ 0, got ${v}`);
  }
  if (!(down >= 1)) fail(fn, `'fieldDownsample' must be ≥ 1, got ${down}`);

  const affineOption = options.affine ?? 'affine';
  if (affineOption instanceof tf.Tensor) {
    if (
      affineOption.rank !== 3 ||
      affineOption.shape[0] !== 1 ||
      affineOption.shape[1] !== nd ||
      affineOption.shape[2] !== nd + 1
    ) {
      fail(
        fn,
        `'affine' must be a [1, ${nd}, ${nd + 1}] tensor, got ${fmtShape(affineOption.shape)}`,
      );
    }
  } else if (affineOption !== false && affineOption !== 'rigid' && affineOption !== 'affine') {
    fail(
      fn,
      `'affine' must be 'affine', 'rigid', false or a [1, ${nd}, ${nd + 1}] tensor, got ${affineOption}`,
    );
  }

  const spatial = fixed.shape.slice(1, -1);
  // image pyramid (before the affine stage, which uses its levels when they are its own),
  // built finest to coarsest so each level smooths and shrinks a grid twice
  // its size (cheap) instead of the full image
  const maxVoxels = options.maxVoxels ?? 2 ** 22;
  if (!(maxVoxels >= 64)) fail(fn, `'maxVoxels' must be ≥ 64, got ${maxVoxels}`);
  const fullVoxels = spatial.reduce((a, b) => a * b, 1);
  const capFactor = Math.max(
    1,
    (fullVoxels / maxVoxels) ** (1 / spatial.filter((s) => s > 1).length),
  );
  const shapes = Array.from({ length: nLevels - skip }, (_, level) =>
    levelShape(spatial, Math.max(2 ** (nLevels - 1 - level), capFactor)),
  );
  // featuresOnce: the pyramid of the full-resolution feature maps, extracted once
  const once = extractor && options.featuresOnce === true;
  const pyramid = once
    ? (() => {
        const [ff, mf] = tf.tidy(() => [extractor.apply(fixed), extractor.apply(moving)]);
        const levels = imagePyramid(ff!, mf!, shapes);
        tf.dispose([ff!, mf!]);
        return levels;
      })()
    : imagePyramid(fixed, moving, shapes);
  // the affine stage's pyramid levels are the same `resizeImage` chain from the full image
  // when the deformable levels are a prefix of them (no maxVoxels cap at the finest built
  // level): then it uses these instead of building its own
  const affineLevelCount = options.affineOptions?.levels ?? 3;
  const shareable =
    !once &&
    shapes.every((shape, l) =>
      tf.util.arraysEqual(shape, levelShape(spatial, 2 ** (affineLevelCount - 1 - l))),
    );
  // the affine stage's features of the shared levels, reused here when both stages use the
  // same extractor (keyed by the pyramid image they were computed from)
  const featureCache = new Map<tf.Tensor, tf.Tensor>();
  const shareFeatures =
    shareable &&
    extractor !== null &&
    options.affineOptions?.similarity === undefined &&
    options.affineOptions?.features === undefined;
  let affine: tf.Tensor | null = null;
  let affineLevels: RegisterAffineResult['levels'] | undefined;
  if (affineOption instanceof tf.Tensor) affine = tf.clone(affineOption);
  else if (affineOption) {
    const stageSimilarity =
      named === 'mi' || named === 'mind'
        ? named
        : named === null || options.features
          ? similarity
          : 'ncc';
    const stage = await fitAffine(
      fixed,
      moving,
      {
        similarity: stageSimilarity,
        ...(options.features && named !== 'mind' ? { features: options.features } : {}),
        ...(options.seed !== undefined ? { seed: options.seed } : {}),
        ...options.affineOptions,
        transform: affineOption,
      },
      false,
      shareable ? pyramid : undefined,
      shareFeatures ? featureCache : undefined,
    );
    affine = stage.affine;
    affineLevels = stage.levels;
  }
  const total = iterations.slice(0, nLevels - skip).reduce((a, b) => a + b, 0);
  let done = 0;
  let param: tf.Variable | null = null;
  const report: RegisterImagesResult['levels'] = [];

  if (options.disposeInputs) tf.dispose([fixed, moving]);
  const release = () => {
    for (const pair of pyramid) if (pair) tf.dispose(pair);
    for (const t of featureCache.values()) t.dispose();
    featureCache.clear();
  };

  for (let level = 0; level < nLevels - skip; level++) {
    const shape = shapes[level]!;
    const pShape = levelShape(shape, down);
    const [fImage, mImage] = pyramid[level]!;
    // features once per level (none at a level with no iterations); the moving ones are
    // warped each iteration
    const perLevelFeatures = extractor && !once && iterations[level]! > 0;
    const cached = [featureCache.get(fImage), featureCache.get(mImage)];
    featureCache.delete(fImage);
    featureCache.delete(mImage);
    const [f, m] = !perLevelFeatures
      ? [fImage, mImage]
      : cached[0] && cached[1]
        ? [cached[0], cached[1]]
        : tf.tidy(() => [extractor.apply(fImage), extractor.apply(mImage)]);
    for (const c of cached) if (c && c !== f && c !== m) c.dispose();
    if (perLevelFeatures) tf.dispose([fImage, mImage]);
    pyramid[level] = [f!, m!];
    const next: tf.Tensor = param ? resizeField(param, pShape) : tf.zeros([1, ...pShape, nd]);
    param?.dispose();
    param = tf.variable(next, true);
    next.dispose();
    const loss = levelLoss(fn, named, similarity, {
      window: level === nLevels - 1 ? window : Math.min(window, 5),
      bins,
    });
    const optimizer = tf.train.adam(lrs[level]!);
    const lambda = lambdas[level]!;
    const p = param;
    // the affine on the parameter grid: x ↦ a(x + u(x)) has the displacement aField + u Bᵀ
    // there; as the affine part is linear in x and the upsampling linear in the field, the
    // level grid's displacement is that field upsampled (exactly), so the level grid holds a
    // single dense field (and its gradient) instead of four
    const onGrid = affine ? affineOnGrid(affine, spatial, pShape) : null;
    /**
     * The displacement on the parameter grid (smoothing, integration, the affine) and its
     * vector–Jacobian product, the forward run once: g ↦ ∂/∂q ⟨d(q), g⟩.
     */
    const onParamGrid = (
      q: tf.Tensor,
    ): { d: tf.Tensor; vjp: (g: tf.Tensor) => tf.Tensor; dispose: () => void } => {
      const smooth = smoothing > 0 ? gaussianSmooth(q, smoothing) : q;
      const flow = model === 'velocity' ? integrateVelocityWithVjp(smooth, { steps }) : null;
      const v = flow ? flow.value : smooth;
      const d = onGrid ? addAffine(v, onGrid) : v;
      return {
        d,
        vjp: (g) =>
          tf.tidy(() => {
            // the affine part is x ↦ field + x Lᵀ per voxel: its adjoint is g L
            const gV = onGrid ? addAffineAdjoint(g, onGrid) : g;
            const gSmooth = flow ? flow.vjp(gV) : gV;
            // the smoothing is self-adjoint (reflecting borders): its vjp is itself
            return smoothing > 0 ? gaussianSmooth(gSmooth, smoothing) : gSmooth;
          }),
        // the fields kept for the integration's backward pass
        dispose: () => flow?.dispose(),
      };
    };
    const sameGrid = pShape.every((s, k) => s === shape[k]);
    let simValue = Number.NaN;
    let regValue = Number.NaN;
    const voxels = shape.reduce((a, b) => a * b, 1);
    // a pointwise similarity on sampled voxels: the level's images (or features) are read
    // once, and each iteration interpolates the sampled points only
    const sampling = (mi || named === 'mind') && voxels > samples && iterations[level]! > 0;
    const fPoints = sampling ? new PointImage(f!) : null;
    const mPoints = sampling ? new PointImage(m!) : null;
    for (let it = 0; it < iterations[level]!; it++) {
      const sample = sampling ? sampleVoxels(voxels, samples, seed++) : null;
      const wantReport = (it + 1) % reportEvery === 0 || it === iterations[level]! - 1;
      let parts: tf.Tensor | null = null;
      // The gradient in two stages, so that the backward passes of the level grid and of the
      // parameter grid are never held at once (tfjs keeps every intermediate gradient of a
      // backward pass until it ends): (1) g = ∂sim/∂d for the level-grid displacement d;
      // (2) back through the upsampling (linear, so its adjoint) and the parameter-grid chain
      // (its forward kept from (1): the integration's fields, on the coarser parameter grid);
      // (3) plus λ·∂reg/∂q. The same gradient as one pass.
      tf.tidy(() => {
        // (each in its own tidy: no intermediate outlives its stage)
        const chain = onParamGrid(p);
        const dParam = chain.d;
        const d = sameGrid ? dParam : resizeField(dParam, shape);
        const [sim, gLevel] = tf.tidy(() => {
          // a sampled (pointwise) similarity: only the sampled voxels are interpolated
          const fAt = sample
            ? tf.reshape(fPoints!.values(sample.dataSync()), [1, samples, 1, -1])
            : null;
          const { value, grad } = tf.valueAndGrad((x: tf.Tensor) =>
            sample
              ? loss(fAt!, warpAtVoxels(mPoints!, x, sample), null)
              : loss(f!, warp(m!, x), null),
          )(d);
          return [value, grad];
        });
        if (!sameGrid) d.dispose();
        let gParam = gLevel;
        if (!sameGrid) {
          gParam = resizeFieldVjp(dParam, shape, gLevel);
          gLevel.dispose();
        }
        const gChain = chain.vjp(gParam);
        chain.dispose();
        gParam.dispose();
        const grad = tf.tidy(() => tf.add(gChain, tf.mul(tf.grad(diffusionLoss)(p), lambda)));
        gChain.dispose();
        optimizer.applyGradients([{ name: p.name, tensor: grad }]);
        if (wantReport) parts = tf.keep(tf.stack([sim, diffusionLoss(p)]));
      });
      sample?.dispose();
      done++;
      if (parts) {
        const values = parts as tf.Tensor;
        const [s, r] = (await values.data()) as Float32Array;
        values.dispose();
        simValue = s!;
        regValue = r!;
        if (!Number.isFinite(simValue)) {
          optimizer.dispose();
          release();
          param.dispose();
          affine?.dispose();
          if (onGrid) tf.dispose([onGrid.field, onGrid.linear]);
          throw new RegkitError(
            `${fn}(): the similarity became ${simValue} at level ${level + 1}, iteration ${it + 1}`,
          );
        }
        options.onProgress?.({
          level: level + 1,
          levels: nLevels - skip,
          iteration: it + 1,
          iterations: iterations[level]!,
          done,
          total,
          similarity: simValue,
          regularisation: regValue,
        });
      }
    }
    optimizer.dispose();
    tf.dispose([f!, m!]);
    if (onGrid) tf.dispose([onGrid.field, onGrid.linear]);
    report.push({
      shape,
      similarity: simValue,
      regularisation: regValue,
      iterations: iterations[level]!,
    });
  }

  for (const t of featureCache.values()) t.dispose();
  featureCache.clear();
  const p = param!;
  const a = affine;
  // the full-resolution fields are built one at a time, each temporary disposed as soon as
  // it is used: the peak is about three full-resolution fields
  /** u on the full grid (a clone-free pass-through when it is already there). */
  const full = (u: tf.Tensor): tf.Tensor => {
    if (u.shape.slice(1, -1).every((s, k) => s === spatial[k])) return u;
    const r = resizeField(u, spatial);
    u.dispose();
    return r;
  };
  /**
   * Adds the affine on the parameter grid, then upsamples: a(x + u(x)) − x = (a − id)(x) +
   * A u(x), exact (no resampling: both terms are linear in what is interpolated).
   */
  const forwardOf = (v: tf.Tensor): tf.Tensor => {
    if (!a) return full(v);
    const grid = affineOnGrid(a, spatial, v.shape.slice(1, -1));
    const d = addAffine(v, grid);
    tf.dispose([v, grid.field, grid.linear]);
    return full(d);
  };
  /** The inverse with the affine: φ⁻¹(a⁻¹(y)) − y = composeFields(u⁻¹, a⁻¹ − id). */
  const inverseWithAffine = (uInv: tf.Tensor): tf.Tensor => {
    if (!a) return uInv;
    const inv = invertAffine(a);
    const field = affineDisplacement(inv, spatial);
    inv.dispose();
    const out = composeFields(uInv, field);
    tf.dispose([uInv, field]);
    return out;
  };
  const wantVelocity = options.returnVelocity ?? true;
  const smooth = smoothing > 0 ? gaussianSmooth(p, smoothing) : tf.clone(p);
  let result: { forward: tf.Tensor; velocity?: tf.Tensor; inverse?: tf.Tensor };
  if (model === 'velocity') {
    const v = tf.tidy(() => integrateVelocity(smooth, { steps }));
    const forward = forwardOf(v === smooth ? tf.clone(v) : v);
    result = { forward };
    if (options.inverse) {
      const back = tf.tidy(() => tf.clone(integrateVelocity(tf.neg(smooth), { steps })));
      result.inverse = inverseWithAffine(full(back));
    }
    if (wantVelocity) result.velocity = full(tf.clone(smooth));
  } else {
    let inverse: tf.Tensor | undefined;
    if (options.inverse) {
      const deformable = full(tf.clone(smooth));
      inverse = inverseWithAffine(invertField(deformable));
      deformable.dispose();
    }
    const forward = forwardOf(tf.clone(smooth));
    result = inverse ? { forward, inverse } : { forward };
  }
  smooth.dispose();
  p.dispose();
  return {
    ...result,
    ...(a ? { affine: a } : {}),
    levels: report,
    ...(affineLevels ? { affineLevels } : {}),
  };
}

/** The displacement x ↦ a(x + u(x)) − x on a grid: `grid.field + u Bᵀ` ({@link affineOnGrid}). */
function addAffine(u: tf.Tensor, grid: { field: tf.Tensor; linear: tf.Tensor }): tf.Tensor {
  return tf.tidy(() => {
    const nd = u.shape[u.rank - 1]!;
    const au = tf.matMul(tf.reshape(u, [-1, nd]), grid.linear, false, true);
    return tf.add(grid.field, tf.reshape(au, u.shape));
  });
}

/** The adjoint of {@link addAffine} in u: g ↦ g L (per voxel; the constant field drops out). */
function addAffineAdjoint(g: tf.Tensor, grid: { linear: tf.Tensor }): tf.Tensor {
  return tf.tidy(() => {
    const nd = g.shape[g.rank - 1]!;
    return tf.reshape(tf.matMul(tf.reshape(g, [-1, nd]), grid.linear), g.shape);
  });
}

/**
 * A per-level option: one finite value ≥ 0 for every level, or a list of `levels` of them
 * (coarsest first). Throws naming `fn` and the option otherwise.
 */
function perLevel(
  fn: string,
  name: string,
  value: number | readonly number[],
  levels: number,
): number[] {
  const list = typeof value === 'number' ? new Array<number>(levels).fill(value) : [...value];
  if (list.length !== levels || list.some((v) => !(v >= 0 && Number.isFinite(v)))) {
    fail(
      fn,
      `'${name}' must be a finite number ≥ 0 or a list of ${levels} of them, got ${JSON.stringify(value)}`,
    );
  }
  return list;
}
