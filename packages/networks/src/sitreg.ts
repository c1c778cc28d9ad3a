import {
  assertImagePair,
  Conv,
  composeFields,
  fail,
  fmtShape,
  GroupNorm,
  identityGrid,
  Module,
  type RegistrationModel,
  type RegistrationOutput,
  type Regulariser,
  type Similarity,
  type SimilarityLoss,
  similarityLoss,
  type TrainingContext,
  type TrainingTerms,
  tf,
  warp,
} from '@regkit/core';
import {
  boundedCubicSplineDeformation,
  type InvertFieldOptions,
  invertField,
} from '@regkit/invertible';
import { diffusionLoss, localNccLoss } from '@regkit/losses';
import { registerNetworkBuilder } from './pretrained.js';
import { type TrainingOptions, type TrainingResult, trainRegistration } from './train.js';

/** Options of {@link createSitreg}. */
export interface SitregOptions {
  /** 2 or 3 spatial dimensions. */
  ndim: 2 | 3;
  /** Channels of each input image (default 1). */
  channels?: number;
  /**
   * Number of resolution levels (default: the length of `featureChannels`, else 4 as the
   * official OASIS and LPBA40 models). Level l works at 1/2^l of the input resolution.
   */
  levels?: number;
  /**
   * Feature extractor channels per level, full resolution first (default [8, 40, 40, 40]
   * for 4 levels, 8 then 40s otherwise; official OASIS config), scaled by `width`.
   */
  featureChannels?: readonly number[];
  /** 3×3(×3) convolutions per feature level, one number or one per level (default 2). */
  featureConvolutions?: number | readonly number[];
  /**
   * Channels of the update heads per level, full resolution first (default [16, 72, 72, 72],
   * 16 then 72s otherwise; official OASIS config), scaled by `width`.
   */
  headChannels?: readonly number[];
  /** 3×3(×3) convolutions per update head, one number or one per level (default 2). */
  headConvolutions?: number | readonly number[];
  /**
   * Multiplies every channel count (default 1): each becomes the nearest multiple of
   * `groupNormGroups` (at least one group's worth), e.g. 0.25 for small 2D examples.
   */
  width?: number;
  /** Groups of every group normalisation (default 2, as the official configs). */
  groupNormGroups?: number;
  /**
   * Safety multiplier of the optimal control-point bound (default 0.99, the official
   * `max_control_point_multiplier`); must be < 1 for guaranteed invertibility.
   */
  multiplier?: number;
  /**
   * Options of every deformation inversion (`invertField`). Default: the official OASIS
   * solver, Anderson with memory 4, at most 50 iterations, forward stop at max |Δ| < 10⁻²
   * voxels, backward stop at relative L2 < 10⁻². Given fields replace these one by one.
   */
  inversion?: InvertFieldOptions;
  /** Seed of the initial weights (default 0). */
  seed?: number;
}

/** What {@link Sitreg.apply} returns (tensors the caller disposes). */
export interface SitregOutput extends RegistrationOutput {
  /**
   * Displacement u of φ = id + u with `warp(moving, forward) ≈ fixed`, `[B, ...S, ndim]`
   * (voxels): the official `forward_mapping` with image_1 = moving.
   */
  forward: tf.Tensor;
  /** Displacement of φ⁻¹, with `warp(fixed, inverse) ≈ moving`, `[B, ...S, ndim]`. */
  inverse: tf.Tensor;
  /** `warp(moving, forward)`: the moving image in the fixed image's coordinates. */
  warped: tf.Tensor;
  /** `warp(fixed, inverse)`: the fixed image in the moving image's coordinates. */
  warpedFixed: tf.Tensor;
}

const DEFAULT_INVERSION: InvertFieldOptions = {
  maxIterations: 50,
  tolerance: 1e-2,
  anderson: { memory: 4 },
  backward: { maxIterations: 50, tolerance: 1e-2, anderson: { memory: 4 } },
};

/** A counter of weight seeds, so every convolution of a model starts differently. */
function seeds(seed: number): () => number {
  let next = seed * 1000;
  return () => next++;
}

/**
 * `x` `[B, ...S, C]` with every 2×2(×2) block of voxels moved into the channels:
 * `[B, ...S/2, 2^ndim·C]`, channel index (o_{n−1}, …, o_0, c) for the offset o_k along axis k.
 * One axis at a time, so every transpose is rank 4 whatever ndim.
 */
function spaceToDepth(x: tf.Tensor): tf.Tensor {
  let y = x;
  const nd = x.rank - 2;
  for (let k = 0; k < nd; k++) {
    const shape = y.shape;
    const outer = shape.slice(0, k + 2).reduce((a, b) => a * b, 1) / 2;
    const inner = shape.slice(k + 2, -1).reduce((a, b) => a * b, 1);
    const c = shape[shape.length - 1]!;
    const t = tf.transpose(tf.reshape(y, [outer, 2, inner, c]), [0, 2, 1, 3]);
    const next = [...shape];
    next[k + 1] = shape[k + 1]! / 2;
    next[next.length - 1] = 2 * c;
    y = tf.reshape(t, next);
  }
  return y;
}

/** 2×2(×2) average pooling with stride 2 of `x` (even spatial sizes), as reshapes and means. */
function averagePool2(x: tf.Tensor): tf.Tensor {
  let y = x;
  const nd = x.rank - 2;
  for (let k = 0; k < nd; k++) {
    const shape = y.shape;
    const outer = shape.slice(0, k + 2).reduce((a, b) => a * b, 1) / 2;
    const inner = shape.slice(k + 2).reduce((a, b) => a * b, 1);
    const next = [...shape];
    next[k + 1] = shape[k + 1]! / 2;
    y = tf.reshape(tf.mean(tf.reshape(y, [outer, 2, inner]), 1), next);
  }
  return y;
}

/**
 * The stride-2 convolution with a 2×2(×2) kernel of `conv` applied as one matrix product of
 * the space-to-depth input (no padding needed, blocks do not overlap): exact, and its
 * gradients avoid the scalar-loop Conv2DBackpropInput of tfjs-backend-wasm.
 */
function patchConv(conv: Conv, x: tf.Tensor): tf.Tensor {
  const nd = conv.ndim;
  const blocks = spaceToDepth(x);
  // kernel [k0, k1, (k2), Cin, Cout] → rows in the (k_{n−1}, …, k_0, c) order of the blocks
  const perm = [...Array.from({ length: nd }, (_, k) => nd - 1 - k), nd, nd + 1];
  const rows = tf.reshape(tf.transpose(conv.kernel, perm), [-1, conv.outChannels]);
  const flat = tf.matMul(tf.reshape(blocks, [-1, rows.shape[0]!]), rows);
  const y = tf.reshape(flat, [...blocks.shape.slice(0, -1), conv.outChannels]);
  return conv.bias ? tf.add(y, conv.bias) : y;
}

/**
 * `n` 3×3(×3) convolutions (padding 1, PyTorch default initialisation), each followed by
 * group normalisation and ReLU: SITReg's `ConvBlockNd`.
 */
class ConvBlock extends Module {
  private readonly convs: Conv[] = [];
  private readonly norms: GroupNorm[] = [];

  constructor(
    ndim: 2 | 3,
    inChannels: number,
    outChannels: number,
    n: number,
    groups: number,
    nextSeed: () => number,
  ) {
    super();
    for (let i = 0; i < n; i++) {
      this.convs.push(
        this.addModule(
          `conv${i}`,
          new Conv(ndim, i === 0 ? inChannels : outChannels, outChannels, { seed: nextSeed() }),
        ),
      );
      this.norms.push(this.addModule(`norm${i}`, new GroupNorm(groups, outChannels)));
    }
  }

  apply(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      let h = x;
      for (let i = 0; i < this.convs.length; i++) {
        h = tf.relu(this.norms[i]!.apply(this.convs[i]!.apply(h)));
      }
      return h;
    });
  }
}

/**
 * SITReg's `EncoderFeatureExtractor`, a ResNet-style encoder run on both images with shared
 * weights: a 1×1 projection to `channels[0]` (the first skip), a convolution block; then per
 * level a 2×2(×2) stride-2 convolution plus the 1×1-projected 2× average-pooled skip (the next
 * skip), followed by a convolution block. Returns one feature map per level, full resolution
 * first.
 */
export class SitregFeatureExtractor extends Module {
  /** 2 or 3 spatial dimensions. */
  readonly ndim: 2 | 3;
  /** Channels of each input image. */
  readonly inChannels: number;
  /** Output channels per level, full resolution first. */
  readonly channels: readonly number[];
  private readonly projection: Conv;
  private readonly blocks: ConvBlock[] = [];
  private readonly downs: Conv[] = [];
  private readonly skips: Conv[] = [];

  constructor(
    ndim: 2 | 3,
    inChannels: number,
    channels: readonly number[],
    convolutions: readonly number[],
    groups: number,
    nextSeed: () => number,
  ) {
    super();
    this.ndim = ndim;
    this.inChannels = inChannels;
    this.channels = [...channels];
    this.projection = this.addModule(
      'projection',
      new Conv(ndim, inChannels, channels[0]!, { kernelSize: 1, seed: nextSeed() }),
    );
    for (let l = 0; l < channels.length; l++) {
      if (l > 0) {
        const [ci, co] = [channels[l - 1]!, channels[l]!];
        this.downs.push(
          this.addModule(
            `down${l}`,
            new Conv(ndim, ci, co, {
              kernelSize: 2,
              stride: 2,
              padding: 'valid',
              seed: nextSeed(),
            }),
          ),
        );
        this.skips.push(
          this.addModule(`skip${l}`, new Conv(ndim, ci, co, { kernelSize: 1, seed: nextSeed() })),
        );
      }
      this.blocks.push(
        this.addModule(
          `level${l}`,
          new ConvBlock(ndim, channels[l]!, channels[l]!, convolutions[l]!, groups, nextSeed),
        ),
      );
    }
  }

  /** Features of `images` `[B, ...S, inChannels]` (S divisible by 2^(levels − 1)), one per level. */
  apply(images: tf.Tensor): tf.Tensor[] {
    const fn = 'SitregFeatureExtractor.apply';
    const nd = this.ndim;
    if (
      !(images instanceof tf.Tensor) ||
      images.rank !== nd + 2 ||
      images.shape[nd + 1] !== this.inChannels
    ) {
      fail(
        fn,
        `'images' must be [B, ${nd === 2 ? 'H, W' : 'D, H, W'}, ${this.inChannels}], got ${images instanceof tf.Tensor ? fmtShape(images.shape) : typeof images}`,
      );
    }
    const m = 2 ** (this.channels.length - 1);
    if (images.shape.slice(1, -1).some((s) => s % m !== 0)) {
      fail(
        fn,
        `spatial sizes of ${fmtShape(images.shape)} must be divisible by 2^${this.channels.length - 1} = ${m}`,
      );
    }
    return tf.tidy(() => {
      let skip = this.projection.apply(images);
      let h = this.blocks[0]!.apply(skip);
      const out = [h];
      for (let l = 1; l < this.channels.length; l++) {
        skip = tf.add(
          patchConv(this.downs[l - 1]!, h),
          this.skips[l - 1]!.apply(averagePool2(skip)),
        );
        h = this.blocks[l]!.apply(skip);
        out.push(h);
      }
      return out;
    });
  }
}

/**
 * One update head of SITReg (`_DenseExtractionNetwork`): a convolution block on the
 * concatenated (f_a − f_b, f_a + f_b) features, then a 1×1 convolution to `ndim` raw control
 * points (bounded by tanh in {@link boundedCubicSplineDeformation}).
 */
export class SitregHead extends Module {
  private readonly block: ConvBlock;
  /** The final 1×1 convolution to `ndim` raw control points. */
  readonly out: Conv;

  constructor(
    ndim: 2 | 3,
    inChannels: number,
    channels: number,
    convolutions: number,
    groups: number,
    nextSeed: () => number,
  ) {
    super();
    this.block = this.addModule(
      'block',
      new ConvBlock(ndim, 2 * inChannels, channels, convolutions, groups, nextSeed),
    );
    this.out = this.addModule(
      'out',
      new Conv(ndim, channels, ndim, { kernelSize: 1, seed: nextSeed() }),
    );
  }

  /** Raw control points `[B, ...G, ndim]` of `[B, ...G, 2·inChannels]` combined features. */
  apply(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => this.out.apply(this.block.apply(x)));
  }
}

/**
 * Samples features on the grid G = S/f of one level at the half-way deformation φ (full
 * resolution S, voxels): feature voxel j sits at fine position c_j = f·j + (f − 1)/2
 * (aligned grid edges, SITReg's `reference=Start()`), φ is sampled there linearly and the
 * features linearly at (c_j + u(c_j) − (f − 1)/2)/f = j + u(c_j)/f, border padding both times.
 */
function sampleFeatures(features: tf.Tensor, halfway: tf.Tensor, factor: number): tf.Tensor {
  return tf.tidy(() => {
    const border = { padding: 'border' } as const;
    if (factor === 1) return warp(features, halfway, border);
    const grid = features.shape.slice(1, -1);
    const batch = features.shape[0]!;
    let centres = tf.add(tf.mul(identityGrid(grid), factor - 1), (factor - 1) / 2);
    if (batch > 1) centres = tf.tile(centres, [batch, ...grid.map(() => 1), 1]);
    const atCentres = warp(halfway, centres, border);
    return warp(features, tf.div(atCentres, factor), border);
  });
}

function positiveIntegers(fn: string, name: string, v: unknown, n: number): number[] {
  const arr = typeof v === 'number' ? new Array<number>(n).fill(v) : Array.isArray(v) ? [...v] : [];
  if (arr.length !== n || !arr.every((a) => Number.isInteger(a) && a >= 1)) {
    fail(
      fn,
      `'${name}' must be a positive integer or ${n} positive integers (one per level), got ${JSON.stringify(v)}`,
    );
  }
  return arr as number[];
}

/**
 * SITReg (Honkamaa & Marttinen, "SITReg: Multi-resolution architecture for symmetric, inverse
 * consistent, and topology preserving image registration"), a port of the official
 * `model/sitreg/model.py` without the optional affine stage:
 *
 * 1. A shared {@link SitregFeatureExtractor} gives features f_a^l, f_b^l of both images at
 *    levels l = 0 (full resolution) … L − 1 (1/2^(L−1)).
 * 2. Coarse to fine, with half-way deformations L_a, L_b (identity at the start), the
 *    features are warped half-way, f̃_a = f_a ∘ L_a, f̃_b = f_b ∘ L_b, and the level's head
 *    predicts A = N(f̃_a − f̃_b, f̃_a + f̃_b) and B = N(f̃_b − f̃_a, f̃_a + f̃_b): tanh-bounded
 *    cubic B-spline deformations with control points every 2^l voxels, invertible by
 *    construction. The symmetric update is U = A ∘ B⁻¹ (its inverse B ∘ A⁻¹); the inverses
 *    come from the deformation inversion layer (`invertField`).
 * 3. L_a ← L_a ∘ A ∘ B⁻¹, L_b ← L_b ∘ B ∘ A⁻¹, L_a⁻¹ ← B ∘ A⁻¹ ∘ L_a⁻¹,
 *    L_b⁻¹ ← A ∘ B⁻¹ ∘ L_b⁻¹, each resampled on the full grid after composing (the official
 *    `_MappingBuilder`); finally forward = L_a ∘ L_b⁻¹ and inverse = L_b ∘ L_a⁻¹.
 *
 * By construction: `apply(b, a)` returns `apply(a, b)`'s forward and inverse swapped
 * (symmetry), forward ∘ inverse = identity up to the inversion tolerance and resampling
 * (inverse consistency), and every Jacobian determinant is positive (topology preservation)
 * whatever the weights. Differentiable in the weights (implicit gradients through the
 * inversions). Sizes must be divisible by 2^(L − 1).
 */
export class Sitreg extends Module implements RegistrationModel<SitregOutput> {
  /** 2 or 3 spatial dimensions. */
  readonly ndim: 2 | 3;
  /** Channels of each input image. */
  readonly channels: number;
  /** Number of resolution levels. */
  readonly levels: number;
  /** Feature channels per level after width scaling, full resolution first. */
  readonly featureChannels: readonly number[];
  /** Head channels per level after width scaling, full resolution first. */
  readonly headChannels: readonly number[];
  /** Safety multiplier of the control-point bound. */
  readonly multiplier: number;
  /** The options every inversion runs with (defaults merged). */
  readonly inversion: InvertFieldOptions;
  /** The feature extractor shared by both images. */
  readonly extractor: SitregFeatureExtractor;
  /** The update heads, indexed by level (0 = full resolution). */
  readonly heads: readonly SitregHead[];

  constructor(options: SitregOptions) {
    super();
    const fn = 'createSitreg';
    const o = options ?? ({} as SitregOptions);
    if (o.ndim !== 2 && o.ndim !== 3) fail(fn, `'ndim' must be 2 or 3, got ${o.ndim}`);
    this.ndim = o.ndim;
    this.channels = o.channels ?? 1;
    if (!Number.isInteger(this.channels) || this.channels < 1) {
      fail(fn, `'channels' must be a positive integer, got ${this.channels}`);
    }
    const levels = o.levels ?? o.featureChannels?.length ?? o.headChannels?.length ?? 4;
    if (!Number.isInteger(levels) || levels < 1 || levels > 8) {
      fail(fn, `'levels' must be an integer in [1, 8], got ${levels}`);
    }
    this.levels = levels;
    const groups = o.groupNormGroups ?? 2;
    if (!Number.isInteger(groups) || groups < 1) {
      fail(fn, `'groupNormGroups' must be a positive integer, got ${groups}`);
    }
    const width = o.width ?? 1;
    if (typeof width !== 'number' || !(width > 0) || !Number.isFinite(width)) {
      fail(fn, `'width' must be a finite number > 0, got ${JSON.stringify(o.width)}`);
    }
    const scaled = (name: string, list: readonly number[]) => {
      const raw = positiveIntegers(fn, name, list, levels);
      return raw.map((c) => {
        const s = width === 1 ? c : Math.max(groups, Math.round((c * width) / groups) * groups);
        if (s % groups !== 0) {
          fail(
            fn,
            `'${name}' ${JSON.stringify(list)}: ${s} channels are not divisible by groupNormGroups = ${groups}`,
          );
        }
        return s;
      });
    };
    const byLevel = (first: number, rest: number) =>
      Array.from({ length: levels }, (_, l) => (l === 0 ? first : rest));
    this.featureChannels = scaled('featureChannels', o.featureChannels ?? byLevel(8, 40));
    this.headChannels = scaled('headChannels', o.headChannels ?? byLevel(16, 72));
    const featureConvs = positiveIntegers(
      fn,
      'featureConvolutions',
      o.featureConvolutions ?? 2,
      levels,
    );
    const headConvs = positiveIntegers(fn, 'headConvolutions', o.headConvolutions ?? 2, levels);
    this.multiplier = o.multiplier ?? 0.99;
    if (!(this.multiplier > 0 && this.multiplier < 1)) {
      fail(fn, `'multiplier' must be in (0, 1) for invertible updates, got ${o.multiplier}`);
    }
    const inv = o.inversion ?? {};
    if (inv === null || typeof inv !== 'object') {
      fail(fn, `'inversion' must be an invertField options object, got ${JSON.stringify(inv)}`);
    }
    this.inversion = {
      ...DEFAULT_INVERSION,
      ...inv,
      backward: { ...DEFAULT_INVERSION.backward, ...(inv.backward ?? {}) },
    };
    const seed = o.seed ?? 0;
    if (!Number.isInteger(seed)) fail(fn, `'seed' must be an integer, got ${o.seed}`);
    const nextSeed = seeds(seed);
    this.extractor = this.addModule(
      'extractor',
      new SitregFeatureExtractor(
        this.ndim,
        this.channels,
        this.featureChannels,
        featureConvs,
        groups,
        nextSeed,
      ),
    );
    this.heads = Array.from({ length: levels }, (_, l) =>
      this.addModule(
        `head${l}`,
        new SitregHead(
          this.ndim,
          this.featureChannels[l]!,
          this.headChannels[l]!,
          headConvs[l]!,
          groups,
          nextSeed,
        ),
      ),
    );
  }

  /**
   * Registers `moving` to `fixed` (`[B, ...S, channels]` each, S divisible by 2^(levels − 1))
   * in one pass giving both directions: `warp(moving, forward) ≈ fixed` and
   * `warp(fixed, inverse) ≈ moving`, with `inverse` the inverse deformation of `forward`.
   */
  apply(moving: tf.Tensor, fixed: tf.Tensor): SitregOutput {
    const fn = 'Sitreg.apply';
    const nd = assertImagePair(fn, moving, fixed);
    if (nd !== this.ndim || moving.shape[nd + 1] !== this.channels) {
      fail(
        fn,
        `'moving' ${fmtShape(moving.shape)} must be a ${this.ndim}D image with ${this.channels} channel(s)`,
      );
    }
    const m = 2 ** (this.levels - 1);
    if (moving.shape.slice(1, -1).some((s) => s % m !== 0)) {
      fail(
        fn,
        `spatial sizes of ${fmtShape(moving.shape)} must be divisible by 2^${this.levels - 1} = ${m}`,
      );
    }
    const [forward, inverse, warped, warpedFixed] = tf.tidy(() => {
      const spatial = moving.shape.slice(1, -1);
      const features = this.extractor.apply(tf.concat([moving, fixed], 0));
      let left: tf.Tensor | null = null; // L_a: moving → half-way
      let right: tf.Tensor | null = null; // L_b: fixed → half-way
      let leftInverse: tf.Tensor | null = null;
      let rightInverse: tf.Tensor | null = null;
      for (let l = this.levels - 1; l >= 0; l--) {
        const factor = 2 ** l;
        const [fa, fb] = tf.split(features[l]!, 2, 0) as [tf.Tensor, tf.Tensor];
        const wa = left ? sampleFeatures(fa, left, factor) : fa;
        const wb = right ? sampleFeatures(fb, right, factor) : fb;
        const difference = tf.sub(wa, wb);
        const sum = tf.add(wa, wb);
        // both orders in one batch: A = N(a − b, a + b), B = N(b − a, a + b)
        const input = tf.concat(
          [tf.concat([difference, sum], -1), tf.concat([tf.neg(difference), sum], -1)],
          0,
        );
        const both = boundedCubicSplineDeformation(this.heads[l]!.apply(input), spatial, {
          upsamplingFactor: factor,
          multiplier: this.multiplier,
        });
        const bothInverse = invertField(both, this.inversion);
        const [a, b] = tf.split(both, 2, 0) as [tf.Tensor, tf.Tensor];
        const [aInverse, bInverse] = tf.split(bothInverse, 2, 0) as [tf.Tensor, tf.Tensor];
        const update = composeFields(a, bInverse); // A ∘ B⁻¹
        const updateInverse = composeFields(b, aInverse); // B ∘ A⁻¹
        left = left ? composeFields(left, update) : update;
        right = right ? composeFields(right, updateInverse) : updateInverse;
        leftInverse = leftInverse
          ? composeFields(b, composeFields(aInverse, leftInverse))
          : updateInverse;
        rightInverse = rightInverse
          ? composeFields(a, composeFields(bInverse, rightInverse))
          : update;
      }
      const fwd = composeFields(left!, rightInverse!);
      const inv = composeFields(right!, leftInverse!);
      return [fwd, inv, warp(moving, fwd), warp(fixed, inv)];
    });
    return { forward: forward!, inverse: inverse!, warped: warped!, warpedFixed: warpedFixed! };
  }

  /**
   * SITReg's symmetric objective ({@link sitregLoss}) with the trainer's similarity in place
   * of LNCC₇ when one is given, the similarity term weighted by α and the regularisation
   * weight w (default 1); a given regulariser replaces the symmetric diffusion term, applied
   * to `{ forward, inverse }` and to the swapped output and averaged.
   */
  trainingLoss(moving: tf.Tensor, fixed: tf.Tensor, context: TrainingContext): TrainingTerms {
    const weight = context.regularisationWeight ?? 1;
    const t = sitregLoss(this, moving, fixed, {
      similarity: context.similarity,
      regulariser: context.regulariser,
    });
    tf.dispose(t.loss);
    return {
      similarity: tf.mul(t.similarity, context.similarityWeight) as tf.Scalar,
      regularisation: tf.mul(t.regularisation, weight) as tf.Scalar,
    };
  }
}

/**
 * Creates a SITReg model; see {@link Sitreg}. Defaults: the official OASIS architecture
 * (features [8, 40, 40, 40], heads [16, 72, 72, 72], two convolutions each, GroupNorm with 2
 * groups, ReLU, control points every 1, 2, 4, 8 voxels, bound multiplier 0.99).
 *
 * @example
 * ```ts
 * const model = createSitreg({ ndim: 2, width: 0.25 });
 * const { forward, inverse, warped } = model.apply(moving, fixed); // warped ≈ fixed
 * ```
 */
export function createSitreg(options: SitregOptions): Sitreg {
  return new Sitreg(options);
}

/** Options of {@link sitregLoss}. */
export interface SitregLossOptions {
  /**
   * The similarity of both directions (default: `localNccLoss` with window {@link window},
   * as SITReg): any loss `(fixed, moving) => scalar` or trainable module (e.g. a
   * `MineEstimator`, whose weights then train with SITReg's).
   */
  similarity?: Similarity;
  /** Replaces the symmetric diffusion term: applied to both directions' outputs and averaged. */
  regulariser?: Regulariser;
  /** Window of the local normalised cross-correlation (default 7, as SITReg). */
  window?: number;
  /** Weight of the regulariser (default 1; the official OASIS runs use 1, 1.5 and 2). */
  regularisationWeight?: number;
  /**
   * Leave out voxels whose deformed position falls outside the image from the similarity:
   * both images are multiplied by that mask before the LNCC (default true, as the official
   * training code masks regions outside the field of view).
   */
  maskOutsideFov?: boolean;
}

/** The terms of {@link sitregLoss} (scalars the caller disposes). */
export interface SitregLossTerms {
  /** similarity + regularisationWeight · regularisation. */
  loss: tf.Scalar;
  /** ½ LNCC(moving ∘ φ, fixed) + ½ LNCC(fixed ∘ φ⁻¹, moving), negative (−1 is perfect). */
  similarity: tf.Scalar;
  /** ½ diffusion(φ) + ½ diffusion(φ⁻¹), unweighted. */
  regularisation: tf.Scalar;
}

/** 1 where x + u(x) lies inside the image on every axis (to 10⁻⁴ voxels), else 0; `[B, ...S, 1]`. */
function insideMask(field: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const spatial = field.shape.slice(1, -1);
    const position = tf.add(identityGrid(spatial), field);
    const tol = 1e-4;
    const above = tf.step(tf.add(position, tol));
    const below = tf.step(tf.sub(tf.tensor1d(spatial.map((s) => s - 1 + tol)), position));
    return tf.min(tf.mul(above, below), -1, true);
  });
}

/**
 * The SITReg training loss of one pair, symmetric in the inputs (official
 * `SITRegTraining.update_weights` with the OASIS config):
 *
 *   ½ LNCC₇(moving ∘ φ, fixed) + ½ LNCC₇(fixed ∘ φ⁻¹, moving)
 *   + w · (½ ‖∇u_φ‖² + ½ ‖∇u_φ⁻¹‖²),
 *
 * with `localNccLoss` (negative squared local correlation) and `diffusionLoss` (mean squared
 * forward differences, the official `GradientDeformationLoss`).
 *
 * @param model the network.
 * @param moving `[B, ...S, C]`.
 * @param fixed `[B, ...S, C]`.
 * @returns `{ loss, similarity, regularisation }`.
 */
export function sitregLoss(
  model: Sitreg,
  moving: tf.Tensor,
  fixed: tf.Tensor,
  options: SitregLossOptions = {},
): SitregLossTerms {
  const fn = 'sitregLoss';
  if (!(model instanceof Sitreg)) fail(fn, `'model' must be a Sitreg model (createSitreg)`);
  const window = options.window ?? 7;
  const weight = options.regularisationWeight ?? 1;
  if (!Number.isInteger(window) || window < 1 || window % 2 === 0) {
    fail(fn, `'window' must be an odd positive integer, got ${options.window}`);
  }
  if (!(Number.isFinite(weight) && weight >= 0)) {
    fail(fn, `'regularisationWeight' must be a finite number ≥ 0, got ${weight}`);
  }
  const mask = options.maskOutsideFov ?? true;
  const simLoss: SimilarityLoss =
    options.similarity === undefined
      ? (f, m) => localNccLoss(f, m, { window })
      : similarityLoss(options.similarity, fn);
  const regulariser = options.regulariser;
  if (regulariser !== undefined && typeof regulariser !== 'function') {
    fail(fn, `'regulariser' must be a function (output) => scalar`);
  }
  const [loss, similarity, regularisation] = tf.tidy(() => {
    const out = model.apply(moving, fixed);
    const term = (warped: tf.Tensor, target: tf.Tensor, field: tf.Tensor) => {
      if (!mask) return simLoss(target, warped);
      const m = insideMask(field);
      return simLoss(tf.mul(target, m), tf.mul(warped, m));
    };
    const sim = tf.mul(
      tf.add(term(out.warped, fixed, out.forward), term(out.warpedFixed, moving, out.inverse)),
      0.5,
    );
    const reg = regulariser
      ? tf.mul(
          tf.add(
            regulariser(out),
            regulariser({ forward: out.inverse, inverse: out.forward, warped: out.warpedFixed }),
          ),
          0.5,
        )
      : tf.mul(tf.add(diffusionLoss(out.forward), diffusionLoss(out.inverse)), 0.5);
    return [tf.add(sim, tf.mul(reg, weight)), sim, reg] as tf.Scalar[];
  });
  return { loss: loss!, similarity: similarity!, regularisation: regularisation! };
}

/** Options of {@link trainSitreg}: the shared {@link TrainingOptions} and SITReg's loss options. */
export interface TrainSitregOptions
  extends TrainingOptions,
    Omit<SitregLossOptions, 'similarity' | 'regulariser'> {
  /** The network (trained in place). */
  model: Sitreg;
}

/**
 * Trains SITReg with Adam on {@link sitregLoss} (the official recipe: LNCC window 7 in both
 * directions, gradient regulariser on both deformations; a given `similarity` or
 * `regulariser` replaces those), through {@link trainRegistration}: atomic resumable
 * checkpoints, progress, a `TrainingDivergedError` before the update on a non-finite loss,
 * and a constant tensor count. Default learning rate 1e-4, as SITReg.
 *
 * @example
 * ```ts
 * const model = createSitreg({ ndim: 2, width: 0.25 });
 * await trainSitreg({ model, epochs: 10, stepsPerEpoch: 100, learningRate: 1e-3,
 *   data: (epoch, step) => pairOf(epoch, step), checkpointDir: 'runs/sitreg' });
 * ```
 */
export async function trainSitreg(options: TrainSitregOptions): Promise<TrainingResult> {
  const fn = 'trainSitreg';
  const o = options ?? ({} as TrainSitregOptions);
  const model = o.model;
  if (!(model instanceof Sitreg)) fail(fn, `'model' must be a Sitreg model (createSitreg)`);
  const { window, maskOutsideFov, ...shared } = o;
  return trainRegistration({
    ...shared,
    learningRate: o.learningRate ?? 1e-4,
    objective: (pair, context) => {
      const t = sitregLoss(model, pair.moving, pair.fixed, {
        window,
        maskOutsideFov,
        similarity: context.similarity,
        regulariser: context.regulariser,
      });
      // (the tensors of the step are freed by the trainer's gradient scope)
      return {
        similarity: tf.mul(t.similarity, context.similarityWeight) as tf.Scalar,
        regularisation: tf.mul(t.regularisation, context.regularisationWeight ?? 1) as tf.Scalar,
      };
    },
  });
}

registerNetworkBuilder('sitreg', (options) => {
  const model = createSitreg(options as unknown as SitregOptions);
  return {
    model,
    predict: (moving, fixed) => {
      const out = model.apply(moving, fixed);
      tf.dispose([out.warped, out.warpedFixed]);
      return { forward: out.forward, inverse: out.inverse };
    },
  };
});
