import {
  assertImagePair,
  Conv,
  fail,
  fmtShape,
  Module,
  maxPool,
  type RegistrationModel,
  type RegistrationOutput,
  type Regulariser,
  type Similarity,
  similarityLoss,
  type TrainingContext,
  type TrainingTerms,
  tf,
  upsampleNearest,
  velocityDeformation,
  warp,
} from '@regkit/core';
import {
  createInvertibleTranslator,
  type InvertibleTranslator,
  type InvertibleTranslatorOptions,
} from '@regkit/inn';
import {
  type BarrierNmiOptions,
  barrierNmiLoss,
  diffusionLoss,
  l1Loss,
  type MutualInformationOptions,
  normalizedMutualInformationLoss,
} from '@regkit/losses';
import { registerNetworkBuilder } from './pretrained.js';
import {
  type TrainingOptions,
  type TrainingProgress,
  type TrainingResult,
  trainRegistration,
} from './train.js';

const positiveInteger = (v: unknown): v is number =>
  typeof v === 'number' && Number.isInteger(v) && v >= 1;

/** Options of {@link createInnregRegistrationNet}. */
export interface InnregRegistrationOptions {
  /** 2 or 3 spatial dimensions. */
  ndim: 2 | 3;
  /** Channels of each input image (default 1); the network sees both, 2·channels. */
  channels?: number;
  /**
   * Features of the residual encoder blocks, one per level (default [16, 32, 32, 64]: the
   * first four levels of the official code's `[16, 32, 32, 64, 64, 64]`, so that 96×112
   * slices fit). Spatial sizes must be divisible by 2^levels.
   */
  encoder?: readonly number[];
  /**
   * Decoder features (default [64, 32, 32, 32, 16], the official code's last four level
   * widths and its full-resolution 16): the first `encoder.length` are one convolution per
   * level before upsampling; the rest are residual blocks of the output path at full
   * resolution (at least one).
   */
  decoder?: readonly number[];
  /** Negative slope of every LeakyReLU (default 0.2). */
  leakySlope?: number;
  /**
   * Predict a stationary velocity field and integrate it by scaling and squaring, as the
   * official code's `VxmDense(int_steps=7)` (default false: the paper's R predicts the
   * displacement φ directly, §3.1).
   */
  diffeomorphic?: boolean;
  /** Scaling-and-squaring steps of diffeomorphic models (default 7). */
  integrationSteps?: number;
  /** Integrate at 1/integrationDownsize resolution, then upsample (default 2; 1 = full). */
  integrationDownsize?: number;
  /**
   * σ of the N(0, σ²) initial kernel of the flow head (default 1e−5, as VoxelMorph and the
   * official code; its bias starts at zero). 0 starts R at exactly the identity.
   */
  flowInitStd?: number;
  /** Seed of the initial weights (default 0). */
  seed?: number;
}

/**
 * A residual block of R: y = σ(conv2(σ(conv1(x))) + s(x)) with 3×3(×3) convolutions,
 * σ = LeakyReLU and s a 1×1(×1) projection when the channel count changes (else the
 * identity). Weights `conv1/…`, `conv2/…` and `skip/…` (projection only).
 */
export class InnregResidualBlock extends Module {
  readonly conv1: Conv;
  readonly conv2: Conv;
  readonly skip: Conv | null;

  constructor(
    readonly ndim: 2 | 3,
    readonly inChannels: number,
    readonly outChannels: number,
    readonly leakySlope: number,
    seed: number,
  ) {
    super();
    this.conv1 = this.addModule('conv1', new Conv(ndim, inChannels, outChannels, { seed }));
    this.conv2 = this.addModule(
      'conv2',
      new Conv(ndim, outChannels, outChannels, { seed: seed + 1 }),
    );
    this.skip =
      inChannels === outChannels
        ? null
        : this.addModule(
            'skip',
            new Conv(ndim, inChannels, outChannels, { kernelSize: 1, seed: seed + 2 }),
          );
  }

  /** `[B, ...S, inChannels]` → `[B, ...S, outChannels]`. */
  apply(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const h = tf.leakyRelu(this.conv1.apply(x), this.leakySlope);
      const shortcut = this.skip ? this.skip.apply(x) : x;
      return tf.leakyRelu(tf.add(this.conv2.apply(h), shortcut), this.leakySlope);
    });
  }
}

/** What {@link InnregRegistrationNet.apply} and {@link Innreg.apply} return (the caller disposes). */
export interface InnregRegistrationOutput extends RegistrationOutput {
  /** The moving image warped by φ, `moving ∘ φ`, `[B, ...S, C]`. */
  warped: tf.Tensor;
  /** Displacement u of φ = id + u, `warp(moving, forward) ≈ fixed`, `[B, ...S, ndim]` (voxels). */
  forward: tf.Tensor;
  /** Displacement of φ⁻¹ = exp(−v) (diffeomorphic models only). */
  inverse?: tf.Tensor;
  /** The stationary velocity before integration (diffeomorphic models only). */
  velocity?: tf.Tensor;
}

/**
 * INNReg's registration network R (Guo 2024, §3.1 and §4.1: "U-NET with residual
 * connections in the encoder and output paths"): φ = R(x, y) from the source and target
 * images of different modalities, concatenated on the channels.
 *
 * - Encoder, per level: an {@link InnregResidualBlock}, then 2× max pooling.
 * - Decoder, per level: a 3×3(×3) convolution with LeakyReLU at the coarse resolution, 2×
 *   nearest upsampling and concatenation with the encoder block output of that resolution
 *   (VoxelMorph's U-Net layout).
 * - Output path: residual blocks at full resolution, then a 3×3(×3) flow convolution to
 *   `ndim` channels (N(0, `flowInitStd`²) kernel, zero bias).
 *
 * The paper's R predicts the displacement φ; `diffeomorphic` integrates a stationary velocity
 * instead (7 squarings at half resolution), as the official code's `VxmDense`. The official
 * code's R is the plain VoxelMorph U-Net (no residual blocks, stride-2 convolutions, six
 * levels); here the paper's residual blocks are used, max pooling downsamples, and four
 * levels by default. Weights `enc{l}/…`, `dec{l}/…`, `out{i}/…`, `flow/…`.
 */
export class InnregRegistrationNet
  extends Module
  implements RegistrationModel<InnregRegistrationOutput>
{
  readonly ndim: 2 | 3;
  readonly channels: number;
  readonly encoderFeatures: readonly number[];
  readonly decoderFeatures: readonly number[];
  readonly leakySlope: number;
  readonly diffeomorphic: boolean;
  readonly integrationSteps: number;
  readonly integrationDownsize: number;
  readonly encoderBlocks: InnregResidualBlock[] = [];
  readonly decoderConvs: Conv[] = [];
  readonly outputBlocks: InnregResidualBlock[] = [];
  readonly flow: Conv;

  constructor(options: InnregRegistrationOptions) {
    super();
    const fn = 'createInnregRegistrationNet';
    const o = options ?? ({} as InnregRegistrationOptions);
    if (o.ndim !== 2 && o.ndim !== 3) fail(fn, `'ndim' must be 2 or 3, got ${o.ndim}`);
    this.ndim = o.ndim;
    this.channels = o.channels ?? 1;
    if (!positiveInteger(this.channels)) {
      fail(fn, `'channels' must be a positive integer, got ${this.channels}`);
    }
    this.encoderFeatures = [...(o.encoder ?? [16, 32, 32, 64])];
    this.decoderFeatures = [...(o.decoder ?? [64, 32, 32, 32, 16])];
    const levels = this.encoderFeatures.length;
    if (levels < 1 || !this.encoderFeatures.every(positiveInteger)) {
      fail(
        fn,
        `'encoder' must be a non-empty list of positive integers, got ${JSON.stringify(o.encoder)}`,
      );
    }
    if (this.decoderFeatures.length < levels + 1 || !this.decoderFeatures.every(positiveInteger)) {
      fail(
        fn,
        `'decoder' must list at least ${levels + 1} positive integers (one per encoder level and at least one output block), got ${JSON.stringify(o.decoder)}`,
      );
    }
    this.leakySlope = o.leakySlope ?? 0.2;
    if (!(Number.isFinite(this.leakySlope) && this.leakySlope >= 0)) {
      fail(fn, `'leakySlope' must be a finite number ≥ 0, got ${this.leakySlope}`);
    }
    this.diffeomorphic = o.diffeomorphic ?? false;
    this.integrationSteps = o.integrationSteps ?? 7;
    this.integrationDownsize = o.integrationDownsize ?? 2;
    if (!Number.isInteger(this.integrationSteps) || this.integrationSteps < 0) {
      fail(fn, `'integrationSteps' must be an integer ≥ 0, got ${this.integrationSteps}`);
    }
    if (!positiveInteger(this.integrationDownsize)) {
      fail(fn, `'integrationDownsize' must be a positive integer, got ${this.integrationDownsize}`);
    }
    const flowStd = o.flowInitStd ?? 1e-5;
    if (!(Number.isFinite(flowStd) && flowStd >= 0)) {
      fail(fn, `'flowInitStd' must be a finite number ≥ 0, got ${flowStd}`);
    }
    let seed = (o.seed ?? 0) * 1000;
    const nd = this.ndim;
    let prev = 2 * this.channels;
    const skips: number[] = [];
    for (let l = 0; l < levels; l++) {
      const nf = this.encoderFeatures[l]!;
      this.encoderBlocks.push(
        this.addModule(`enc${l}`, new InnregResidualBlock(nd, prev, nf, this.leakySlope, seed)),
      );
      seed += 3;
      prev = nf;
      skips.push(nf);
    }
    skips.reverse();
    for (let l = 0; l < levels; l++) {
      const nf = this.decoderFeatures[l]!;
      this.decoderConvs.push(this.addModule(`dec${l}`, new Conv(nd, prev, nf, { seed: seed++ })));
      prev = nf + skips[l]!;
    }
    for (let i = levels; i < this.decoderFeatures.length; i++) {
      const nf = this.decoderFeatures[i]!;
      this.outputBlocks.push(
        this.addModule(
          `out${i - levels}`,
          new InnregResidualBlock(nd, prev, nf, this.leakySlope, seed),
        ),
      );
      seed += 3;
      prev = nf;
    }
    this.flow = this.addModule(
      'flow',
      new Conv(nd, prev, nd, {
        init: flowStd > 0 ? { normal: flowStd } : 'zeros',
        biasInit: 'zeros',
        seed: seed + 997,
      }),
    );
  }

  /** Number of 2× poolings: spatial sizes must be divisible by 2^levels. */
  get levels(): number {
    return this.encoderFeatures.length;
  }

  /** The raw output of the flow head (displacement, or velocity when diffeomorphic), `[B, ...S, ndim]`. */
  field(moving: tf.Tensor, fixed: tf.Tensor): tf.Tensor {
    this.check('InnregRegistrationNet.field', moving, fixed);
    return tf.tidy(() => {
      const act = (t: tf.Tensor) => tf.leakyRelu(t, this.leakySlope);
      const history: tf.Tensor[] = [];
      let h = tf.concat([moving, fixed], -1);
      for (const block of this.encoderBlocks) {
        h = block.apply(h);
        history.push(h);
        h = maxPool(h, 2);
      }
      for (const conv of this.decoderConvs) {
        h = act(conv.apply(h));
        h = tf.concat([upsampleNearest(h, 2), history.pop()!], -1);
      }
      for (const block of this.outputBlocks) h = block.apply(h);
      return this.flow.apply(h);
    });
  }

  /**
   * Registers `moving` to `fixed` (`[B, ...S, channels]` each, S divisible by 2^levels):
   * the warped moving image and the displacement(s).
   */
  apply(moving: tf.Tensor, fixed: tf.Tensor): InnregRegistrationOutput {
    this.check('InnregRegistrationNet.apply', moving, fixed);
    const out = tf.tidy(() => {
      const raw = this.field(moving, fixed);
      if (!this.diffeomorphic) return [warp(moving, raw), raw];
      const { forward, inverse } = velocityDeformation(raw, {
        steps: this.integrationSteps,
        downsize: this.integrationDownsize,
      });
      return [warp(moving, forward), forward, inverse!, raw];
    });
    const result: InnregRegistrationOutput = { warped: out[0]!, forward: out[1]! };
    if (out[2]) result.inverse = out[2];
    if (out[3]) result.velocity = out[3];
    return result;
  }

  private check(fn: string, moving: tf.Tensor, fixed: tf.Tensor): void {
    const nd = assertImagePair(fn, moving, fixed);
    if (nd !== this.ndim || moving.shape[nd + 1] !== this.channels) {
      fail(
        fn,
        `'moving' ${fmtShape(moving.shape)} must be a ${this.ndim}D image with ${this.channels} channel(s)`,
      );
    }
    const m = 2 ** this.levels;
    if (moving.shape.slice(1, -1).some((s) => s % m !== 0)) {
      fail(
        fn,
        `spatial sizes of ${fmtShape(moving.shape)} must be divisible by 2^${this.levels} = ${m}`,
      );
    }
  }
}

/** Creates INNReg's registration network R alone (see {@link InnregRegistrationNet}). */
export function createInnregRegistrationNet(
  options: InnregRegistrationOptions,
): InnregRegistrationNet {
  return new InnregRegistrationNet(options);
}

/** λ of the four terms of INNReg's total loss (eq. 14), plus the official code's extra term. */
export interface InnregLossWeights {
  /** λ_α of L_recon = ‖fake_y ∘ φ − y‖₁ (default 1). */
  recon: number;
  /** λ_β of the (barrier) NMI term between x ∘ φ and y (default 1). */
  nmi: number;
  /** λ_γ of the INN cross-translation loss L_INN = ‖T⁻¹(T(x)) − x‖₁ (default 0.1). */
  inn: number;
  /** λ_δ of the smoothness loss of φ (default 10). */
  smooth: number;
  /**
   * Weight of ‖T⁻¹(y) − x ∘ φ‖₁ (default 0: not in the paper). The official code adds this
   * term to its registration loss (`loss_R`, weight 1); it trains T⁻¹ on the target images.
   */
  inverseRecon: number;
}

/** Options of {@link createInnreg}. */
export interface InnregOptions {
  /** 2 or 3 spatial dimensions. */
  ndim: 2 | 3;
  /** Channels of the images of both modalities (default 1). */
  channels?: number;
  /**
   * Options of the translator T: X → Y (`createInvertibleTranslator` of `@regkit/inn`):
   * default 8 affine coupling blocks with DDWConv dense-block subnets, as the paper.
   */
  translator?: Omit<InvertibleTranslatorOptions, 'ndim' | 'channels' | 'seed'>;
  /** Options of the registration network R ({@link InnregRegistrationNet}). */
  registration?: Omit<InnregRegistrationOptions, 'ndim' | 'channels' | 'seed'>;
  /** Loss weights (defaults as the paper §4.1: recon 1, nmi 1, inn 0.1, smooth 10, inverseRecon 0). */
  weights?: Partial<InnregLossWeights>;
  /** The barrier b of the barrier NMI loss (default 5, as the paper). */
  barrier?: number;
  /** Seed of the initial weights (default 0). */
  seed?: number;
}

/** Per-call options of {@link Innreg.loss} (the paper's ablation switches and the NMI details). */
export interface InnregLossOptions {
  /** Include the INN cross-translation loss L_INN (default true; false: ablation "Base"). */
  crossTranslation?: boolean;
  /**
   * `'barrier'` (default): −log(b − I_NMI), eq. 11 (`barrierNmiLoss`). `'plain'`: I_NMI itself,
   * eq. 10, minimised without the barrier (ablation "AB+NMI").
   */
  nmi?: 'barrier' | 'plain';
  /**
   * Definition of I_NMI in the barrier (`barrierNmiLoss`'s `form`): `'paper'` (default,
   * (H(A) + H(B)) / MI(A, B)) or `'code'` (the official `NMI_Loss`, 1 − MI).
   */
  barrierForm?: BarrierNmiOptions['form'];
  /** Parzen histogram options of the NMI (bins 23, σ ratio 0.5, intensity range [0, 1]). */
  histogram?: MutualInformationOptions;
  /**
   * A similarity `(fixed, moving)` in place of the (barrier) NMI term between y and x ∘ φ
   * (e.g. `mutualInformationLoss`, MINE); then `nmi` and `barrierForm` are unused.
   */
  similarity?: Similarity;
  /** A regulariser of R's output in place of L_smooth (the `smooth` term, weight λ_δ). */
  regulariser?: Regulariser;
}

/** The total loss of {@link Innreg.loss} and its unweighted terms (scalars the caller disposes). */
export interface InnregLossTerms {
  /** λ_α·recon + λ_β·nmi + λ_γ·inn + λ_δ·smooth + w·inverseRecon. */
  loss: tf.Scalar;
  /** L_recon = mean |fake_y ∘ φ − y| with fake_y = T(x) (eq. 9). */
  recon: tf.Scalar;
  /** −log(b − I_NMI(y, x ∘ φ)) (eq. 11), or I_NMI itself with `nmi: 'plain'` (eq. 10). */
  nmi: tf.Scalar;
  /** L_INN = mean |T⁻¹(T(x)) − x| (eq. 12); 0 with `crossTranslation: false`. */
  inn: tf.Scalar;
  /** L_smooth = (1/N) Σ_p ‖∇u(p)‖² of the displacement u of φ (eq. 13, forward differences). */
  smooth: tf.Scalar;
  /** mean |T⁻¹(y) − x ∘ φ| (official code only; 0 unless its weight is > 0). */
  inverseRecon: tf.Scalar;
}

/**
 * I_NMI = (H(A) + H(B)) / MI(A, B) of the paper's eq. 10, per batch item and averaged: with
 * Studholme's N = (H(A) + H(B)) / H(A, B) of `normalizedMutualInformationLoss` (negated) and
 * MI = H(A) + H(B) − H(A, B), I = N / (N − 1) (N − 1 floored at 1e−7). ≥ 2; 2 for identical
 * images.
 */
function paperNmi(a: tf.Tensor, b: tf.Tensor, options: MutualInformationOptions = {}): tf.Scalar {
  const fn = 'paperNmi';
  assertImagePair(fn, a, b);
  return tf.tidy(() => {
    const n = a.shape[0]!;
    const items: tf.Tensor[] = [];
    for (let i = 0; i < n; i++) {
      const begin = new Array<number>(a.rank).fill(0);
      begin[0] = i;
      const size = [1, ...a.shape.slice(1)];
      const nmi = tf.neg(
        normalizedMutualInformationLoss(
          tf.slice(a, begin, size),
          tf.slice(b, begin, size),
          options,
        ),
      );
      items.push(tf.div(nmi, tf.maximum(tf.sub(nmi, 1), 1e-7)));
    }
    return tf.div(tf.addN(items), n) as tf.Scalar;
  });
}

/**
 * INNReg (Guo 2024, "Unsupervised multi-modal medical image registration via invertible
 * translation"): an invertible translator T: X → Y (`@regkit/inn`, weights `translator/…`)
 * trained jointly with a registration network R ({@link InnregRegistrationNet}, weights
 * `registration/…`). Only R registers at test time ({@link Innreg.apply}); T makes the
 * mono-modal reconstruction term possible during training ({@link Innreg.loss}).
 */
export class Innreg extends Module implements RegistrationModel<InnregRegistrationOutput> {
  readonly ndim: 2 | 3;
  readonly channels: number;
  readonly translator: InvertibleTranslator;
  readonly registration: InnregRegistrationNet;
  /** λ of the loss terms. */
  readonly lossWeights: Readonly<InnregLossWeights>;
  /** b of the barrier NMI loss. */
  readonly barrier: number;

  constructor(options: InnregOptions) {
    super();
    const fn = 'createInnreg';
    const o = options ?? ({} as InnregOptions);
    if (o.ndim !== 2 && o.ndim !== 3) fail(fn, `'ndim' must be 2 or 3, got ${o.ndim}`);
    this.ndim = o.ndim;
    this.channels = o.channels ?? 1;
    if (!positiveInteger(this.channels)) {
      fail(fn, `'channels' must be a positive integer, got ${this.channels}`);
    }
    const w = o.weights ?? {};
    this.lossWeights = Object.freeze({
      recon: w.recon ?? 1,
      nmi: w.nmi ?? 1,
      inn: w.inn ?? 0.1,
      smooth: w.smooth ?? 10,
      inverseRecon: w.inverseRecon ?? 0,
    });
    for (const [k, v] of Object.entries(this.lossWeights)) {
      if (!(Number.isFinite(v) && v >= 0)) {
        fail(fn, `'weights.${k}' must be a finite number ≥ 0, got ${v}`);
      }
    }
    for (const k of Object.keys(w)) {
      if (!(k in this.lossWeights)) {
        fail(fn, `unknown loss weight '${k}' (known: ${Object.keys(this.lossWeights).join(', ')})`);
      }
    }
    this.barrier = o.barrier ?? 5;
    if (!Number.isFinite(this.barrier)) fail(fn, `'barrier' must be finite, got ${this.barrier}`);
    const seed = o.seed ?? 0;
    this.translator = this.addModule(
      'translator',
      createInvertibleTranslator({
        ...o.translator,
        ndim: this.ndim,
        channels: this.channels,
        seed: seed * 7919 + 1,
      }),
    );
    try {
      this.registration = this.addModule(
        'registration',
        new InnregRegistrationNet({
          ...o.registration,
          ndim: this.ndim,
          channels: this.channels,
          seed,
        }),
      );
    } catch (e) {
      this.translator.dispose();
      throw e;
    }
  }

  /** Test time: registers `moving` (modality X) to `fixed` (modality Y) with R alone. */
  apply(moving: tf.Tensor, fixed: tf.Tensor): InnregRegistrationOutput {
    return this.registration.apply(moving, fixed);
  }

  /**
   * INNReg's training objective ({@link Innreg.loss}) for the shared trainer: a given
   * similarity replaces the (barrier) NMI term and a given regulariser the smoothness term
   * (with weight w in place of λ_δ when given). The similarity term (λ_α·recon + λ_β·NMI +
   * λ_γ·INN + inverseRecon) is multiplied by α.
   */
  trainingLoss(moving: tf.Tensor, fixed: tf.Tensor, context: TrainingContext): TrainingTerms {
    return this.trainingTerms(moving, fixed, context, {});
  }

  /** {@link Innreg.trainingLoss} with loss options (the ablation switches of `trainInnreg`). */
  trainingTerms(
    moving: tf.Tensor,
    fixed: tf.Tensor,
    context: TrainingContext,
    options: InnregLossOptions,
    onTerms?: (t: InnregLossTerms) => void,
  ): TrainingTerms {
    const t = this.loss(moving, fixed, {
      ...options,
      similarity: context.similarity ?? options.similarity,
      regulariser: context.regulariser ?? options.regulariser,
    });
    onTerms?.(t);
    const w = this.lossWeights;
    const similarity = tf.mul(
      tf.addN([
        tf.mul(t.recon, w.recon),
        tf.mul(t.nmi, w.nmi),
        tf.mul(t.inn, w.inn),
        tf.mul(t.inverseRecon, w.inverseRecon),
      ]),
      context.similarityWeight,
    );
    const smooth = tf.mul(t.smooth, context.regularisationWeight ?? w.smooth);
    return { similarity: similarity as tf.Scalar, regularisation: smooth as tf.Scalar };
  }

  /** fake_y = T(x): `x` `[B, ...S, C]` translated to modality Y. */
  translate(x: tf.Tensor): tf.Tensor {
    return this.translator.translate(x);
  }

  /**
   * INNReg's training loss (§3.3, eq. 14) of a source image `x` (modality X, moving) and a
   * target image `y` (modality Y, fixed), `[B, ...S, C]` each:
   *
   *   φ = R(x, y),  fake_y = T(x)
   *   L_recon  = ‖fake_y ∘ φ − y‖₁                      (eq. 9, mean absolute error)
   *   L_barrier = −log(b − I_NMI(y, x ∘ φ))              (eq. 11; `nmi: 'plain'`: I_NMI, eq. 10)
   *   L_INN    = ‖T⁻¹(T(x)) − x‖₁                        (eq. 12)
   *   L_smooth = (1/N) Σ_p ‖∇u(p)‖²                      (eq. 13)
   *
   * and their weighted sum. Deviations and details:
   * - L_INN is the paper's round trip of x; T is invertible by construction, so it is of the
   *   order of float rounding (it measures numerical invertibility; its gradient is about 0).
   *   The official code also round-trips y (T(T⁻¹(y))), and its registration loss has
   *   ‖T⁻¹(y) − x ∘ φ‖₁ too: that term is the `inverseRecon` weight here (default 0).
   * - L_smooth sums the squared forward differences over axes and components as eq. 13
   *   (each difference averaged over the voxels where it exists): ndim² times the official
   *   code's `smooothing_loss` (= `diffusionLoss`), which averages over them.
   * - I_NMI: the paper's (H(y) + H(x ∘ φ)) / MI on Parzen histograms (`barrierNmiLoss`,
   *   intensities in `histogram.range`, default [0, 1]); `barrierForm: 'code'` uses the
   *   official 1 − MI. φ is the displacement (diffeomorphic R: the integrated one), used for
   *   both warps as in the paper and the code.
   * - With b = 5 the paper's I_NMI of misaligned multi-modal pairs is often above b (ITK
   *   T1/PD slices: 4.99 aligned, about 7.7 misaligned); `barrierNmiLoss` then continues
   *   linearly with slope 1/δ = 1000, so the NMI term dominates R's gradient until I < b.
   */
  loss(x: tf.Tensor, y: tf.Tensor, options: InnregLossOptions = {}): InnregLossTerms {
    const fn = 'Innreg.loss';
    const nd = assertImagePair(fn, x, y);
    if (nd !== this.ndim || x.shape[nd + 1] !== this.channels) {
      fail(
        fn,
        `'x' ${fmtShape(x.shape)} must be a ${this.ndim}D image with ${this.channels} channel(s)`,
      );
    }
    const o = options ?? {};
    const cross = o.crossTranslation ?? true;
    if (typeof cross !== 'boolean') {
      fail(fn, `'crossTranslation' must be true or false, got ${JSON.stringify(cross)}`);
    }
    const nmiKind = o.nmi ?? 'barrier';
    if (nmiKind !== 'barrier' && nmiKind !== 'plain') {
      fail(fn, `'nmi' must be 'barrier' or 'plain', got ${JSON.stringify(nmiKind)}`);
    }
    const w = this.lossWeights;
    const simLoss = o.similarity === undefined ? null : similarityLoss(o.similarity, fn);
    const out = tf.tidy(() => {
      const reg = this.registration.apply(x, y);
      const u = reg.forward;
      const fakeY = this.translator.forward(x).output;
      const recon = l1Loss(warp(fakeY, u), y);
      const nmi = simLoss
        ? simLoss(y, reg.warped)
        : nmiKind === 'barrier'
          ? barrierNmiLoss(reg.warped, y, {
              ...o.histogram,
              bound: this.barrier,
              form: o.barrierForm,
            })
          : paperNmi(reg.warped, y, o.histogram);
      const zero = tf.scalar(0);
      const inn = cross ? l1Loss(this.translator.inverse(fakeY).output, x) : zero;
      const smooth = (
        o.regulariser ? o.regulariser(reg) : tf.mul(diffusionLoss(u), nd * nd)
      ) as tf.Scalar;
      const inverseRecon =
        w.inverseRecon > 0 ? l1Loss(this.translator.inverse(y).output, reg.warped) : zero;
      const loss = tf.addN([
        tf.mul(recon, w.recon),
        tf.mul(nmi, w.nmi),
        tf.mul(inn, w.inn),
        tf.mul(smooth, w.smooth),
        tf.mul(inverseRecon, w.inverseRecon),
      ]) as tf.Scalar;
      return [loss, recon, nmi, inn, smooth, inverseRecon] as tf.Scalar[];
    });
    const [loss, recon, nmi, inn, smooth, inverseRecon] = out as [
      tf.Scalar,
      tf.Scalar,
      tf.Scalar,
      tf.Scalar,
      tf.Scalar,
      tf.Scalar,
    ];
    return { loss, recon, nmi, inn, smooth, inverseRecon };
  }
}

/**
 * Creates an INNReg model (see {@link Innreg}): translator T (8 DDWConv coupling blocks) and
 * residual U-Net R; loss weights 1, 1, 0.1, 10 and barrier b = 5 as the paper.
 *
 * @example
 * ```ts
 * const model = createInnreg({ ndim: 2 });
 * const { loss, recon, nmi } = model.loss(t1, t2);          // training
 * const { warped, forward } = model.apply(t1, t2);          // test time: R only
 * ```
 */
export function createInnreg(options: InnregOptions): Innreg {
  return new Innreg(options);
}

/** What {@link TrainInnregOptions.onProgress} receives after every step. */
export interface InnregTrainingProgress extends TrainingProgress {
  /** The unweighted loss terms of this step. */
  terms: { recon: number; nmi: number; inn: number; smooth: number; inverseRecon: number };
}

/** Options of {@link trainInnreg}: the shared {@link TrainingOptions} and INNReg's loss options. */
export interface TrainInnregOptions extends TrainingOptions<InnregTrainingProgress> {
  /**
   * The model (T and R train jointly, in place). `data` gives `moving` = the source image x
   * (modality X) and `fixed` = the target y (modality Y). Defaults: Adam 2e−4, β1 0.5, as the
   * paper; `similarity` replaces the NMI term, `regulariser` the smoothness term.
   */
  model: Innreg;
  /** Loss options: the ablation switches `crossTranslation` and `nmi`, NMI details. */
  loss?: InnregLossOptions;
}

/**
 * Trains INNReg's T and R jointly with Adam on {@link Innreg.loss}, through
 * {@link trainRegistration}: atomic resumable checkpoints (T, R and Adam state), progress
 * (`similarity` is the weighted recon + NMI + INN (+ inverseRecon) terms, `regularisation`
 * the weighted smoothness term, `terms` the unweighted terms), a `TrainingDivergedError`
 * before the update on a non-finite loss, and a constant tensor count. The paper's linear
 * learning-rate decay is not applied (the trainer has a constant rate).
 *
 * @example
 * ```ts
 * const model = createInnreg({ ndim: 2, seed: 1 });
 * await trainInnreg({ model, epochs: 8, stepsPerEpoch: 50, learningRate: 1e-3,
 *   data: (epoch, step) => pairOf(epoch, step), loss: { crossTranslation: true, nmi: 'barrier' } });
 * const { forward } = model.apply(moving, fixed);
 * ```
 */
export async function trainInnreg(options: TrainInnregOptions): Promise<TrainingResult> {
  const fn = 'trainInnreg';
  const o = options ?? ({} as TrainInnregOptions);
  const model = o.model;
  if (!(model instanceof Innreg)) fail(fn, `'model' must be an Innreg model (createInnreg)`);
  const lossOptions = o.loss ?? {};
  if (typeof lossOptions !== 'object') fail(fn, `'loss' must be an object of loss options`);
  let terms: InnregTrainingProgress['terms'] = {
    recon: 0,
    nmi: 0,
    inn: 0,
    smooth: 0,
    inverseRecon: 0,
  };
  const { loss: _loss, onProgress, ...shared } = o;
  return trainRegistration({
    ...shared,
    learningRate: o.learningRate ?? 2e-4,
    beta1: o.beta1 ?? 0.5,
    beta2: o.beta2 ?? 0.999,
    onProgress: onProgress ? (p) => onProgress({ ...p, terms: { ...terms } }) : undefined,
    objective: (pair, context) =>
      // (the tensors of the step are freed by the trainer's gradient scope)
      model.trainingTerms(pair.moving, pair.fixed, context, lossOptions, (t) => {
        const read = (s: tf.Scalar) => s.dataSync()[0]!;
        terms = {
          recon: read(t.recon),
          nmi: read(t.nmi),
          inn: read(t.inn),
          smooth: read(t.smooth),
          inverseRecon: read(t.inverseRecon),
        };
      }),
  });
}

registerNetworkBuilder('innreg', (options) => {
  const model = createInnreg(options as unknown as InnregOptions);
  return {
    model,
    predict: (moving, fixed) => {
      const out = model.apply(moving, fixed);
      tf.dispose([out.warped, ...(out.velocity ? [out.velocity] : [])]);
      return out.inverse
        ? { forward: out.forward, inverse: out.inverse }
        : { forward: out.forward };
    },
  };
});
