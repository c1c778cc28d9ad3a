/**
 * FIRE (Wang, Yang & Papanastasiou): bi-directional cross-modality synthesis with two
 * factorised transformation networks, each an affine subnet followed by a non-rigid one.
 *
 * No official code is public; every choice the paper leaves open is stated where it is made
 * and listed in examples/fire/README.md ("Deviations and choices").
 */
import {
  affineField,
  assertImagePair,
  Conv,
  Dense,
  fail,
  fmtShape,
  Module,
  type RegistrationModel,
  type RegistrationOutput,
  type Regulariser,
  resizeField,
  type Similarity,
  type SimilarityLoss,
  similarityLoss,
  type TrainingContext,
  type TrainingTerms,
  tf,
  upsampleNearest,
  warp,
} from '@regkit/core';
import { registerNetworkBuilder } from './pretrained.js';
import {
  type ParameterGroup,
  type TrainingOptions,
  type TrainingResult,
  trainRegistration,
} from './train.js';

/** Options of {@link createFire}. */
export interface FireOptions {
  /** 2 or 3 spatial dimensions. */
  ndim: 2 | 3;
  /** Channels of each input image (default 1). */
  channels?: number;
  /**
   * Multiplies the synthesis channels 64, 128, 256 and the non-rigid subnet's 64 (default 1,
   * the paper's sizes); each becomes max(1, round(c · width)), e.g. 0.125 → 8, 16, 32 for 2D
   * training on a CPU.
   */
  width?: number;
  /** Explicit encoder/decoder channels [64, 128, 256]-like (replaces `width` for them). */
  encoderChannels?: readonly [number, number, number];
  /** Channels of the non-rigid subnet's parallel blocks (default round(64 · width)). */
  nonRigidChannels?: number;
  /** Residual blocks of the encoder and of each decoder (default 4, as the paper). */
  residualBlocks?: number;
  /**
   * Output channels of the affine subnet's three convolutions (default [8, 16, 20]: the
   * paper's "(1 × 8, 7)", "(8 × 10, 5; 16 × 20, 2)" read as output channels 8, 16, 20).
   */
  affineChannels?: readonly [number, number, number];
  /** Units of the affine subnet's first dense layer (default 32, as the STN it follows). */
  affineHidden?: number;
  /**
   * Bound of the tanh non-rigid field in normalised coordinates p ∈ [−1, 1]^n (default 1, the
   * paper's: up to half the image extent); 0.2 bounds |u_k| by 0.1 (S_k − 1) voxels.
   */
  maxDisplacement?: number;
  /** Slope of the LeakyReLUs of the transformation networks (default 0.2). */
  leakySlope?: number;
  /** Seed of the initial weights (default 0). */
  seed?: number;
}

/** What {@link Fire.apply} returns (tensors the caller disposes). */
export interface FireOutput extends RegistrationOutput {
  /**
   * Displacement of φ^{A→B} = φ_af ∘ φ_nr, A the moving image: `warp(moving, forward) ≈ fixed`,
   * `[B, ...S, ndim]` voxels; forward(x) = u_nr(x) + u_af(x + u_nr(x)).
   */
  forward: tf.Tensor;
  /** Displacement of φ^{B→A} (the other transformation network): `warp(fixed, inverse) ≈ moving`. */
  inverse: tf.Tensor;
  /** The affine part of φ^{A→B} in voxels, `[B, ndim, ndim + 1]` = [A | t] about the centre (core `affineField`). */
  affine: tf.Tensor;
  /** The non-rigid part u_nr of φ^{A→B} at the input resolution, `[B, ...S, ndim]` voxels. */
  nonRigid: tf.Tensor;
  /** `warp(moving, forward)`. */
  warped: tf.Tensor;
}

/**
 * Instance normalisation without learnt scale or shift (PyTorch `InstanceNorm2d/3d` with its
 * defaults, as CycleGAN's generator): per sample and channel,
 * y = (x − mean_S x) / √(var_S x + ε), with the biased variance over the spatial axes.
 *
 * @param x `[B, ...S, C]`.
 * @param epsilon ε (default 1e-5, PyTorch's).
 * @returns `[B, ...S, C]`.
 */
export function instanceNorm(x: tf.Tensor, epsilon = 1e-5): tf.Tensor {
  if (!(x instanceof tf.Tensor) || x.rank < 3) {
    fail(
      'instanceNorm',
      `'x' must be [B, ...S, C], got ${x instanceof tf.Tensor ? fmtShape(x.shape) : typeof x}`,
    );
  }
  return tf.tidy(() => {
    const axes = Array.from({ length: x.rank - 2 }, (_, i) => i + 1);
    const { mean, variance } = tf.moments(x, axes, true);
    return tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, epsilon)));
  });
}

/**
 * Root mean square difference on normalised inputs, the paper's RMS:
 * √(mean((a − b)²) + ε), ε = 1e-8 keeping the gradient finite where a = b (the inverse
 * consistency of two zero fields is exactly 0 at initialisation).
 *
 * @param a any shape; `b` the same shape.
 * @returns scalar.
 */
export function fireRms(a: tf.Tensor, b: tf.Tensor): tf.Scalar {
  if (!tf.util.arraysEqual(a.shape, b.shape)) {
    fail('fireRms', `shapes differ: ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`);
  }
  return tf.tidy(() => tf.sqrt(tf.add(tf.mean(tf.squaredDifference(a, b)), 1e-8)) as tf.Scalar);
}

type Activation = 'relu' | 'leaky' | 'none';

function activate(x: tf.Tensor, act: Activation, slope: number): tf.Tensor {
  if (act === 'relu') return tf.relu(x);
  if (act === 'leaky') return tf.leakyRelu(x, slope);
  return x;
}

/** Convolution → instance norm (optional) → activation: the paper's "convolutional block". */
export class FireConvBlock extends Module {
  readonly conv: Conv;

  constructor(
    ndim: 2 | 3,
    inChannels: number,
    outChannels: number,
    readonly options: {
      kernelSize: number;
      stride?: number;
      padding?: 'same' | 'valid' | number;
      norm?: boolean;
      activation?: Activation;
      leakySlope?: number;
      seed: number;
    },
  ) {
    super();
    this.conv = this.addModule(
      'conv',
      new Conv(ndim, inChannels, outChannels, {
        kernelSize: options.kernelSize,
        stride: options.stride ?? 1,
        padding: options.padding,
        seed: options.seed,
      }),
    );
  }

  /** `[B, ...S, Cin]` → `[B, ...S/stride, Cout]`. */
  apply(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      let h = this.conv.apply(x);
      if (this.options.norm ?? true) h = instanceNorm(h);
      return activate(h, this.options.activation ?? 'relu', this.options.leakySlope ?? 0.2);
    });
  }
}

/**
 * CycleGAN's residual block: x + IN(conv₂(act(IN(conv₁(x))))), 3×3(×3) convolutions with
 * zero padding 1 (CycleGAN pads by reflection; tfjs's MirrorPad gradient is wrong,
 * docs/tfjs-pitfalls.md).
 */
export class FireResidualBlock extends Module {
  readonly conv1: Conv;
  readonly conv2: Conv;

  constructor(
    ndim: 2 | 3,
    channels: number,
    seed: number,
    readonly activation: Activation = 'relu',
    readonly leakySlope = 0.2,
  ) {
    super();
    this.conv1 = this.addModule('conv1', new Conv(ndim, channels, channels, { seed }));
    this.conv2 = this.addModule('conv2', new Conv(ndim, channels, channels, { seed: seed + 1 }));
  }

  /** `[B, ...S, C]` → `[B, ...S, C]`. */
  apply(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const h = activate(instanceNorm(this.conv1.apply(x)), this.activation, this.leakySlope);
      return tf.add(x, instanceNorm(this.conv2.apply(h)));
    });
  }
}

function scaled(c: number, width: number): number {
  return Math.max(1, Math.round(c * width));
}

/**
 * The synthesis encoder G: 7×7 block (C → 64w), two stride-2 3×3 blocks (128w, 256w; conv,
 * instance norm, ReLU), then `residualBlocks` residual blocks at 256w.
 * `[B, ...S, C]` → `[B, ...S/4, 256w]`.
 */
export class FireEncoder extends Module {
  readonly blocks: FireConvBlock[];
  readonly residual: FireResidualBlock[] = [];
  readonly outChannels: number;

  constructor(
    ndim: 2 | 3,
    channels: number,
    widths: readonly [number, number, number],
    residualBlocks: number,
    seed: number,
  ) {
    super();
    const [c1, c2, c3] = widths;
    this.outChannels = c3;
    this.blocks = [
      this.addModule(
        'block0',
        new FireConvBlock(ndim, channels, c1, { kernelSize: 7, seed: seed }),
      ),
      this.addModule(
        'down1',
        new FireConvBlock(ndim, c1, c2, { kernelSize: 3, stride: 2, padding: 1, seed: seed + 1 }),
      ),
      this.addModule(
        'down2',
        new FireConvBlock(ndim, c2, c3, { kernelSize: 3, stride: 2, padding: 1, seed: seed + 2 }),
      ),
    ];
    for (let i = 0; i < residualBlocks; i++) {
      this.residual.push(
        this.addModule(`res${i}`, new FireResidualBlock(ndim, c3, seed + 10 + 2 * i)),
      );
    }
  }

  apply(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      let h = x;
      for (const b of this.blocks) h = b.apply(h);
      for (const r of this.residual) h = r.apply(h);
      return h;
    });
  }
}

/**
 * A synthesis decoder F: `residualBlocks` residual blocks at 256w, two upsampling stages
 * (nearest ×2, then a stride-1 3×3 block: 128w, 64w), a 7×7 block to 3 channels, and a 1×1
 * convolution to C channels with tanh. `[B, ...S/4, 256w]` → `[B, ...S, C]` in (−1, 1).
 */
export class FireDecoder extends Module {
  readonly residual: FireResidualBlock[] = [];
  readonly up: FireConvBlock[];
  readonly last: FireConvBlock;
  readonly out: Conv;

  constructor(
    ndim: 2 | 3,
    channels: number,
    widths: readonly [number, number, number],
    residualBlocks: number,
    seed: number,
  ) {
    super();
    const [c1, c2, c3] = widths;
    for (let i = 0; i < residualBlocks; i++) {
      this.residual.push(this.addModule(`res${i}`, new FireResidualBlock(ndim, c3, seed + 2 * i)));
    }
    this.up = [
      this.addModule('up1', new FireConvBlock(ndim, c3, c2, { kernelSize: 3, seed: seed + 20 })),
      this.addModule('up2', new FireConvBlock(ndim, c2, c1, { kernelSize: 3, seed: seed + 21 })),
    ];
    this.last = this.addModule(
      'last',
      new FireConvBlock(ndim, c1, 3, { kernelSize: 7, seed: seed + 22 }),
    );
    this.out = this.addModule(
      'out',
      new Conv(ndim, 3, channels, { kernelSize: 1, seed: seed + 23 }),
    );
  }

  apply(features: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      let h = features;
      for (const r of this.residual) h = r.apply(h);
      for (const u of this.up) h = u.apply(upsampleNearest(h, 2));
      return tf.tanh(this.out.apply(this.last.apply(h)));
    });
  }
}

/**
 * The affine subnet T_af: the concatenated features [G(x_moving), G(x_fixed)] through three
 * stride-2 convolutions (kernels 7, 5, 2; instance norm and LeakyReLU after the first two,
 * LeakyReLU only after the third, whose global average would otherwise be constant), global
 * average pooling, Dense(hidden) + ReLU and Dense(n(n + 1)) initialised to the identity
 * (zero weights, bias [I | 0]). Returns [A | t] in normalised coordinates p ∈ [−1, 1]^n
 * (p_k = 2 x_k/(S_k − 1) − 1), `[B, ndim, ndim + 1]`.
 */
export class FireAffineNet extends Module {
  readonly convs: FireConvBlock[];
  readonly dense1: Dense;
  readonly dense2: Dense;

  constructor(
    readonly ndim: 2 | 3,
    inChannels: number,
    channels: readonly [number, number, number],
    hidden: number,
    leakySlope: number,
    seed: number,
  ) {
    super();
    const kernels = [7, 5, 2];
    let prev = inChannels;
    this.convs = channels.map((c, i) => {
      const block = this.addModule(
        `conv${i}`,
        new FireConvBlock(ndim, prev, c, {
          kernelSize: kernels[i]!,
          stride: 2,
          padding: i < 2 ? (kernels[i]! - 1) / 2 : 'same',
          norm: i < 2,
          activation: 'leaky',
          leakySlope,
          seed: seed + i,
        }),
      );
      prev = c;
      return block;
    });
    this.dense1 = this.addModule('dense1', new Dense(prev, hidden, { seed: seed + 5 }));
    const identity = new Float32Array(ndim * (ndim + 1));
    for (let i = 0; i < ndim; i++) identity[i * (ndim + 1) + i] = 1;
    this.dense2 = this.addModule(
      'dense2',
      new Dense(hidden, ndim * (ndim + 1), { init: 'zeros', biasInit: 'zeros', seed: seed + 6 }),
    );
    const bias = tf.tensor1d(identity);
    this.dense2.bias!.assign(bias);
    bias.dispose();
  }

  /** `[B, ...S', Cm]`, `[B, ...S', Cf]` → `[B, ndim, ndim + 1]` normalised [A | t]. */
  apply(movingFeatures: tf.Tensor, fixedFeatures: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      let h = tf.concat([movingFeatures, fixedFeatures], -1);
      for (const c of this.convs) h = c.apply(h);
      const pooled = tf.mean(
        h,
        Array.from({ length: this.ndim }, (_, i) => i + 1),
      );
      const theta = this.dense2.apply(tf.relu(this.dense1.apply(pooled)));
      return tf.reshape(theta, [-1, this.ndim, this.ndim + 1]);
    });
  }
}

/**
 * The non-rigid subnet T_nr: the affinely warped moving features and the fixed features
 * through parallel 3×3 blocks (conv, instance norm, LeakyReLU; own weights), concatenated, a
 * residual block with LeakyReLU, and a 3×3 convolution to n channels (weights N(0, (10⁻⁵)²),
 * VoxelMorph's flow layer, so the field starts near zero) with tanh × `maxDisplacement`:
 * the displacement in normalised coordinates at G's resolution, `[B, ...S', ndim]`.
 */
export class FireNonRigidNet extends Module {
  readonly moving: FireConvBlock;
  readonly fixed: FireConvBlock;
  readonly residual: FireResidualBlock;
  readonly flow: Conv;

  constructor(
    ndim: 2 | 3,
    inChannels: number,
    channels: number,
    readonly maxDisplacement: number,
    leakySlope: number,
    seed: number,
  ) {
    super();
    const block = (s: number) =>
      new FireConvBlock(ndim, inChannels, channels, {
        kernelSize: 3,
        activation: 'leaky',
        leakySlope,
        seed: s,
      });
    this.moving = this.addModule('moving', block(seed));
    this.fixed = this.addModule('fixed', block(seed + 1));
    this.residual = this.addModule(
      'residual',
      new FireResidualBlock(ndim, 2 * channels, seed + 2, 'leaky', leakySlope),
    );
    this.flow = this.addModule(
      'flow',
      new Conv(ndim, 2 * channels, ndim, {
        init: { normal: 1e-5 },
        biasInit: 'zeros',
        seed: seed + 4,
      }),
    );
  }

  apply(warpedMovingFeatures: tf.Tensor, fixedFeatures: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const h = tf.concat(
        [this.moving.apply(warpedMovingFeatures), this.fixed.apply(fixedFeatures)],
        -1,
      );
      return tf.mul(tf.tanh(this.flow.apply(this.residual.apply(h))), this.maxDisplacement);
    });
  }
}

/** A transformation network T: the affine subnet followed by the non-rigid subnet. */
export class FireTransformNet extends Module {
  readonly affine: FireAffineNet;
  readonly nonRigid: FireNonRigidNet;

  constructor(
    ndim: 2 | 3,
    features: number,
    o: Required<
      Pick<FireOptions, 'affineChannels' | 'affineHidden' | 'maxDisplacement' | 'leakySlope'>
    >,
    nonRigidChannels: number,
    seed: number,
  ) {
    super();
    this.affine = this.addModule(
      'affine',
      new FireAffineNet(ndim, 2 * features, o.affineChannels, o.affineHidden, o.leakySlope, seed),
    );
    this.nonRigid = this.addModule(
      'nonRigid',
      new FireNonRigidNet(
        ndim,
        features,
        nonRigidChannels,
        o.maxDisplacement,
        o.leakySlope,
        seed + 10,
      ),
    );
  }
}

/** Half extents h_k = (S_k − 1)/2: x_k = c_k + h_k p_k. */
function halfExtents(spatial: readonly number[]): number[] {
  return spatial.map((s) => (s - 1) / 2);
}

/**
 * The voxel matrix of a normalised affine [A | t] on a grid `spatial`, in core's
 * `affineField` convention y = A_v (x − c) + t_v + c: A_v = H A H⁻¹, t_v = H t with
 * H = diag(h), h_k = (S_k − 1)/2.
 *
 * @param theta `[B, ndim, ndim + 1]` normalised.
 * @returns `[B, ndim, ndim + 1]` in voxels.
 */
export function normalisedToVoxelAffine(theta: tf.Tensor, spatial: readonly number[]): tf.Tensor {
  const nd = spatial.length;
  const h = halfExtents(spatial);
  const scale: number[][] = [];
  for (let i = 0; i < nd; i++) {
    const row: number[] = [];
    for (let j = 0; j < nd; j++) row.push(h[i]! / h[j]!);
    row.push(h[i]!);
    scale.push(row);
  }
  return tf.tidy(() => tf.mul(theta, tf.tensor2d(scale)));
}

/** Normalised displacement `[B, ...S, ndim]` → voxels: component k times h_k = (S_k − 1)/2. */
function normalisedToVoxels(field: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(field, tf.tensor1d(halfExtents(field.shape.slice(1, -1)))));
}

/**
 * u(x) = u_nr(x) + u_af(x + u_nr(x)) = u_af(x) + A·u_nr(x) for the affine u_af(x) =
 * (A − I)(x − c) + t: φ_af ∘ φ_nr exactly (the affine extends beyond the grid).
 */
function composeAffineNonRigid(voxelAffine: tf.Tensor, nonRigid: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const spatial = nonRigid.shape.slice(1, -1);
    const nd = spatial.length;
    const b = nonRigid.shape[0]!;
    const a = tf.slice(voxelAffine, [0, 0, 0], [b, nd, nd]);
    const flat = tf.reshape(nonRigid, [b, -1, nd]);
    const rotated = tf.reshape(tf.matMul(flat, a, false, true), nonRigid.shape);
    return tf.add(affineField(voxelAffine, spatial), rotated);
  });
}

/** The fields of one transformation network for one pair (tensors the caller disposes). */
export interface FireTransform {
  /** Normalised [A | t], `[B, ndim, ndim + 1]`. */
  theta: tf.Tensor;
  /** u_nr in normalised coordinates at G's resolution (what the smoothness term acts on). */
  nonRigidNormalised: tf.Tensor;
  /** φ_af and φ = φ_af ∘ φ_nr on G's grid (voxels of that grid). */
  affineFeatures: tf.Tensor;
  composedFeatures: tf.Tensor;
  /** φ_af, u_nr and φ at the input resolution (voxels); affine [A | t] in voxels. */
  affineVoxel: tf.Tensor;
  affineImage: tf.Tensor;
  nonRigidImage: tf.Tensor;
  composedImage: tf.Tensor;
}

/**
 * FIRE: one synthesis encoder G, decoders F^{A→B}, F^{B→A} and transformation networks
 * T^{A→B}, T^{B→A}. `apply(moving, fixed)` takes A = moving, B = fixed: T^{A→B} gives
 * `forward`, T^{B→A} the `inverse`. Spatial sizes must be multiples of 4, at least 12 (G downsamples
 * twice). Build with {@link createFire}.
 */
export class Fire extends Module implements RegistrationModel<FireOutput> {
  readonly ndim: 2 | 3;
  readonly channels: number;
  readonly encoder: FireEncoder;
  readonly decoderAB: FireDecoder;
  readonly decoderBA: FireDecoder;
  readonly transformAB: FireTransformNet;
  readonly transformBA: FireTransformNet;

  constructor(readonly options: FireOptions) {
    super();
    const fn = 'createFire';
    const o = options ?? ({} as FireOptions);
    if (o.ndim !== 2 && o.ndim !== 3) fail(fn, `'ndim' must be 2 or 3, got ${o.ndim}`);
    this.ndim = o.ndim;
    this.channels = o.channels ?? 1;
    const width = o.width ?? 1;
    const residualBlocks = o.residualBlocks ?? 4;
    if (!Number.isInteger(this.channels) || this.channels < 1) {
      fail(fn, `'channels' must be a positive integer, got ${o.channels}`);
    }
    if (!(Number.isFinite(width) && width > 0)) fail(fn, `'width' must be > 0, got ${o.width}`);
    if (!Number.isInteger(residualBlocks) || residualBlocks < 0) {
      fail(fn, `'residualBlocks' must be an integer ≥ 0, got ${o.residualBlocks}`);
    }
    const maxDisplacement = o.maxDisplacement ?? 1;
    if (!(Number.isFinite(maxDisplacement) && maxDisplacement > 0)) {
      fail(fn, `'maxDisplacement' must be > 0, got ${o.maxDisplacement}`);
    }
    const affineChannels = o.affineChannels ?? [8, 16, 20];
    if (
      !Array.isArray(affineChannels) ||
      affineChannels.length !== 3 ||
      affineChannels.some((c) => !Number.isInteger(c) || c < 1)
    ) {
      fail(
        fn,
        `'affineChannels' must be 3 positive integers, got ${JSON.stringify(affineChannels)}`,
      );
    }
    const widths =
      o.encoderChannels ??
      ([64, 128, 256].map((c) => scaled(c, width)) as [number, number, number]);
    if (
      !Array.isArray(widths) ||
      widths.length !== 3 ||
      widths.some((c) => !Number.isInteger(c) || c < 1)
    ) {
      fail(fn, `'encoderChannels' must be 3 positive integers, got ${JSON.stringify(widths)}`);
    }
    const nr = o.nonRigidChannels ?? scaled(64, width);
    if (!Number.isInteger(nr) || nr < 1) {
      fail(fn, `'nonRigidChannels' must be a positive integer, got ${o.nonRigidChannels}`);
    }
    const seed = o.seed ?? 0;
    const sub = {
      affineChannels,
      affineHidden: o.affineHidden ?? 32,
      maxDisplacement,
      leakySlope: o.leakySlope ?? 0.2,
    };
    this.encoder = this.addModule(
      'encoder',
      new FireEncoder(this.ndim, this.channels, widths, residualBlocks, seed * 1000),
    );
    const f = this.encoder.outChannels;
    this.decoderAB = this.addModule(
      'decoderAB',
      new FireDecoder(this.ndim, this.channels, widths, residualBlocks, seed * 1000 + 100),
    );
    this.decoderBA = this.addModule(
      'decoderBA',
      new FireDecoder(this.ndim, this.channels, widths, residualBlocks, seed * 1000 + 200),
    );
    this.transformAB = this.addModule(
      'transformAB',
      new FireTransformNet(this.ndim, f, sub, nr, seed * 1000 + 300),
    );
    this.transformBA = this.addModule(
      'transformBA',
      new FireTransformNet(this.ndim, f, sub, nr, seed * 1000 + 400),
    );
  }

  /** Checks a pair: same shape, `channels` channels, spatial sizes multiples of 4, ≥ 12. */
  checkPair(fn: string, moving: tf.Tensor, fixed: tf.Tensor): void {
    const nd = assertImagePair(fn, moving, fixed);
    if (nd !== this.ndim)
      fail(fn, `this FIRE registers ${this.ndim}D images, got ${fmtShape(moving.shape)}`);
    if (moving.shape[nd + 1] !== this.channels) {
      fail(fn, `images must have ${this.channels} channel(s), got ${fmtShape(moving.shape)}`);
    }
    if (moving.shape.slice(1, -1).some((s) => s % 4 !== 0 || s < 12)) {
      fail(
        fn,
        `every spatial size must be a multiple of 4 and ≥ 12 (G downsamples twice; the smoothness term needs 3 field points per axis), got ${fmtShape(moving.shape)}`,
      );
    }
  }

  /**
   * The transformation of `net` from the moving features onto the fixed ones: the affine
   * from [G(moving), G(fixed)], the non-rigid field from (G(moving) ∘ φ_af, G(fixed)),
   * φ = φ_af ∘ φ_nr on G's grid and, the non-rigid field linearly resampled (core
   * `resizeField`, corners aligned), at `imageShape`.
   */
  transform(
    net: FireTransformNet,
    movingFeatures: tf.Tensor,
    fixedFeatures: tf.Tensor,
    imageShape: readonly number[],
  ): FireTransform {
    const featureShape = movingFeatures.shape.slice(1, -1);
    return tf.tidy(() => {
      const theta = net.affine.apply(movingFeatures, fixedFeatures);
      const affineG = affineField(normalisedToVoxelAffine(theta, featureShape), featureShape);
      const nonRigidNormalised = net.nonRigid.apply(warp(movingFeatures, affineG), fixedFeatures);
      const nonRigidG = normalisedToVoxels(nonRigidNormalised);
      const voxelG = normalisedToVoxelAffine(theta, featureShape);
      const composedFeatures = composeAffineNonRigid(voxelG, nonRigidG);
      const affineVoxel = normalisedToVoxelAffine(theta, imageShape);
      const nonRigidImage = resizeField(nonRigidG, imageShape);
      return {
        theta,
        nonRigidNormalised,
        affineFeatures: affineG,
        composedFeatures,
        affineVoxel,
        affineImage: affineField(affineVoxel, imageShape),
        nonRigidImage,
        composedImage: composeAffineNonRigid(affineVoxel, nonRigidImage),
      };
    });
  }

  /**
   * Registers `moving` (modality A) to `fixed` (modality B), `[B, ...S, C]` normalised as in
   * training: G on both, T^{A→B} for `forward` and T^{B→A} for `inverse`.
   */
  apply(moving: tf.Tensor, fixed: tf.Tensor): FireOutput {
    this.checkPair('Fire.apply', moving, fixed);
    const spatial = moving.shape.slice(1, -1);
    return tf.tidy(() => {
      const gA = this.encoder.apply(moving);
      const gB = this.encoder.apply(fixed);
      const ab = this.transform(this.transformAB, gA, gB, spatial);
      const ba = this.transform(this.transformBA, gB, gA, spatial);
      return {
        forward: ab.composedImage,
        inverse: ba.composedImage,
        affine: ab.affineVoxel,
        nonRigid: ab.nonRigidImage,
        warped: warp(moving, ab.composedImage),
      };
    });
  }

  /**
   * Synthesis x̂ = F(G(x)) of an image: `direction` 'AB' maps modality A to B (F^{A→B}),
   * 'BA' the reverse. `[B, ...S, C]` → `[B, ...S, C]` in (−1, 1).
   */
  synthesise(image: tf.Tensor, direction: 'AB' | 'BA'): tf.Tensor {
    this.checkPair('Fire.synthesise', image, image);
    return tf.tidy(() =>
      (direction === 'AB' ? this.decoderAB : this.decoderBA).apply(this.encoder.apply(image)),
    );
  }

  /** FIRE's own loss ({@link fireLoss}) as the trainer's terms. */
  trainingLoss(moving: tf.Tensor, fixed: tf.Tensor, context: TrainingContext): TrainingTerms {
    const t = fireLoss(this, moving, fixed, {
      similarity: context.similarity,
      similarityWeight: context.similarityWeight,
      regulariser: context.regulariser,
      smoothWeightScale: context.regularisationWeight,
    });
    // (the tensors of the step, the other terms included, are freed by the trainer's scope)
    return { similarity: t.similarity, regularisation: t.regularisation };
  }
}

/** Builds a {@link Fire} model (weights seeded by `seed`). */
export function createFire(options: FireOptions): Fire {
  return new Fire(options);
}

/**
 * The paper's smoothness weight λ = 2^{2n}/(10 N), N the number of voxels of the input image
 * (with the field at G's resolution, N/4ⁿ points, λ·Σ is a tenth of the mean).
 */
export function fireSmoothWeight(spatialShape: readonly number[]): number {
  const n = spatialShape.length;
  const N = spatialShape.reduce((a, b) => a * b, 1);
  return 2 ** (2 * n) / (10 * N);
}

/**
 * The paper's smoothness term of one field (Eq. 10, "‖∇²φ_nr‖² where ∇ is the Laplacian"):
 * Σ over interior points and components of (Σ_k ∂²u/∂x_k²)², second differences
 * u(x + e_k) − 2u(x) + u(x − e_k) on the field's own grid (normalised units).
 *
 * @param field `[B, ...S, ndim]`, every spatial size ≥ 3.
 * @returns scalar (a sum, not a mean: λ normalises it).
 */
export function laplacianEnergy(field: tf.Tensor): tf.Scalar {
  const nd = field.rank - 2;
  if (nd < 1 || field.shape[field.rank - 1] !== nd || field.shape.slice(1, -1).some((s) => s < 3)) {
    fail(
      'laplacianEnergy',
      `'field' must be [B, ...S, ndim] with every size ≥ 3, got ${fmtShape(field.shape)}`,
    );
  }
  return tf.tidy(() => {
    const inner = field.shape.map((s, i) => (i >= 1 && i <= nd ? s - 2 : s));
    const at = (axis: number, offset: number) => {
      const begin: number[] = field.shape.map((_, i) => (i >= 1 && i <= nd ? 1 : 0));
      begin[axis] = 1 + offset;
      return tf.slice(field, begin, inner);
    };
    const centre = at(1, 0);
    const terms = Array.from({ length: nd }, (_, k) =>
      tf.sub(tf.add(at(k + 1, 1), at(k + 1, -1)), tf.mul(centre, 2)),
    );
    return tf.sum(tf.square(tf.addN(terms))) as tf.Scalar;
  });
}

/** Options of {@link fireLoss}. */
export interface FireLossOptions {
  /**
   * Replaces the registration accuracy term (Eq. 7, RMS between F(G(x^A ∘ φ^{A→B})) and x^B
   * in both directions) by this similarity of the warped images and the targets directly:
   * S(x^B, x^A ∘ φ^{A→B}) + S(x^A, x^B ∘ φ^{B→A}) (LNCC, MINE, a DNS-feature loss, …).
   */
  similarity?: Similarity;
  /** Weight of the registration accuracy term (default 1). */
  similarityWeight?: number;
  /** Replaces the smoothness term: applied to `{ forward: u_nr }` of both directions (G's grid, normalised). */
  regulariser?: Regulariser;
  /** Multiplies λ (default 1: the paper's λ = 2^{2n}/(10N)). */
  smoothWeightScale?: number;
}

/** The unweighted terms of {@link fireLoss} (scalars the caller disposes). */
export interface FireLossTerms {
  /** Eq. 2: RMS(F^{A→B}(G(x^A) ∘ φ^{A→B}), x^B) + the reverse. */
  synthesisAccuracy: tf.Scalar;
  /** Eq. 3: RMS(G(x^A), G(x^B) ∘ φ^{B→A}) + RMS(G(x^B), G(x^A) ∘ φ^{A→B}). */
  featureConsistency: tf.Scalar;
  /** Eq. 4: RMS(F^{B→A}(G(x̂^B)), x^A) + RMS(F^{A→B}(G(x̂^A)), x^B). */
  cycle: tf.Scalar;
  /** Eq. 5: RMS(G(x^A), G(x̂^B)) + RMS(G(x^B), G(x̂^A)). */
  alignment: tf.Scalar;
  /** Eq. 7 (read as F(G(x^A ∘ φ)), see the README), or the given similarity. */
  registrationAccuracy: tf.Scalar;
  /** Eq. 8: RMS(x^A, x^A ∘ φ^{A→B} ∘ φ^{B→A}) + RMS(x^B, x^B ∘ φ^{B→A} ∘ φ^{A→B}). */
  inverseConsistency: tf.Scalar;
  /** Eq. 11: RMS(x^B, F^{A→B}(G(x^A) ∘ φ_af^{A→B})) + the reverse. */
  synthesisRegularisation: tf.Scalar;
  /** Eq. 12: RMS(x^B, F^{A→B}(G(x^A ∘ φ_af^{A→B}))) + the reverse. */
  registrationRegularisation: tf.Scalar;
  /** Eq. 10: Laplacian energy of both non-rigid fields (sums; or the given regulariser). */
  smoothness: tf.Scalar;
}

/** What {@link fireLoss} returns. */
export interface FireLossResult {
  /** similarity + regularisation. */
  loss: tf.Scalar;
  /** weight · registrationAccuracy. */
  similarity: tf.Scalar;
  /** Every other term: L_syn + L_reg,ic + R_syn + R_reg + λ R_smooth. */
  regularisation: tf.Scalar;
  terms: FireLossTerms;
}

/**
 * FIRE's loss of one pair (A = moving, B = fixed), Eq. 1: L = L_syn + L_reg + R with
 * L_syn = Eqs. 2–5, L_reg = Eq. 7 + Eq. 8, R = R_syn + R_reg + λ R_smooth (Eqs. 10–13), every
 * term an RMS of normalised inputs except the smoothness. Warps of features use φ on G's grid,
 * warps of images φ at the input resolution.
 *
 * @param model the network.
 * @param moving `[B, ...S, C]` image of modality A.
 * @param fixed `[B, ...S, C]` image of modality B.
 */
export function fireLoss(
  model: Fire,
  moving: tf.Tensor,
  fixed: tf.Tensor,
  options: FireLossOptions = {},
): FireLossResult {
  const fn = 'fireLoss';
  if (!(model instanceof Fire)) fail(fn, `'model' must be a Fire model (createFire)`);
  model.checkPair(fn, moving, fixed);
  const weight = options.similarityWeight ?? 1;
  const scale = options.smoothWeightScale ?? 1;
  for (const [name, v] of [
    ['similarityWeight', weight],
    ['smoothWeightScale', scale],
  ] as const) {
    if (!(Number.isFinite(v) && v >= 0))
      fail(fn, `'${name}' must be a finite number ≥ 0, got ${v}`);
  }
  const sim: SimilarityLoss | undefined =
    options.similarity === undefined ? undefined : similarityLoss(options.similarity, fn);
  const spatial = moving.shape.slice(1, -1);
  const lambda = fireSmoothWeight(spatial) * scale;
  const G = (x: tf.Tensor) => model.encoder.apply(x);
  const out = tf.tidy(() => {
    const [xA, xB] = [moving, fixed];
    const gA = G(xA);
    const gB = G(xB);
    const FAB = (g: tf.Tensor) => model.decoderAB.apply(g);
    const FBA = (g: tf.Tensor) => model.decoderBA.apply(g);
    const ab = model.transform(model.transformAB, gA, gB, spatial);
    const ba = model.transform(model.transformBA, gB, gA, spatial);
    const gAw = warp(gA, ab.composedFeatures);
    const gBw = warp(gB, ba.composedFeatures);
    const synthB = FAB(gA); // x̂^B
    const synthA = FBA(gB); // x̂^A
    const gSynthB = G(synthB);
    const gSynthA = G(synthA);
    const xAw = warp(xA, ab.composedImage);
    const xBw = warp(xB, ba.composedImage);
    const synthesisAccuracy = tf.add(fireRms(FAB(gAw), xB), fireRms(FBA(gBw), xA));
    const featureConsistency = tf.add(fireRms(gA, gBw), fireRms(gB, gAw));
    const cycle = tf.add(fireRms(FBA(gSynthB), xA), fireRms(FAB(gSynthA), xB));
    const alignment = tf.add(fireRms(gA, gSynthB), fireRms(gB, gSynthA));
    const registrationAccuracy = sim
      ? tf.add(sim(xB, xAw), sim(xA, xBw))
      : tf.add(fireRms(FAB(G(xAw)), xB), fireRms(FBA(G(xBw)), xA));
    const inverseConsistency = tf.add(
      fireRms(xA, warp(xAw, ba.composedImage)),
      fireRms(xB, warp(xBw, ab.composedImage)),
    );
    const synthesisRegularisation = tf.add(
      fireRms(xB, FAB(warp(gA, ab.affineFeatures))),
      fireRms(xA, FBA(warp(gB, ba.affineFeatures))),
    );
    const registrationRegularisation = tf.add(
      fireRms(xB, FAB(G(warp(xA, ab.affineImage)))),
      fireRms(xA, FBA(G(warp(xB, ba.affineImage)))),
    );
    const smoothness = options.regulariser
      ? tf.add(
          options.regulariser({ forward: ab.nonRigidNormalised }),
          options.regulariser({ forward: ba.nonRigidNormalised }),
        )
      : tf.add(laplacianEnergy(ab.nonRigidNormalised), laplacianEnergy(ba.nonRigidNormalised));
    const terms = {
      synthesisAccuracy,
      featureConsistency,
      cycle,
      alignment,
      registrationAccuracy,
      inverseConsistency,
      synthesisRegularisation,
      registrationRegularisation,
      smoothness,
    } as Record<keyof FireLossTerms, tf.Scalar>;
    const similarity = tf.mul(registrationAccuracy, weight) as tf.Scalar;
    const regularisation = tf.addN([
      synthesisAccuracy,
      featureConsistency,
      cycle,
      alignment,
      inverseConsistency,
      synthesisRegularisation,
      registrationRegularisation,
      tf.mul(smoothness, options.regulariser ? scale : lambda),
    ]) as tf.Scalar;
    return {
      loss: tf.add(similarity, regularisation) as tf.Scalar,
      similarity,
      regularisation,
      terms,
    };
  });
  return out as FireLossResult;
}

/** Learning rates of the three Adam optimisers (paper: 1e-5, 5e-5, 1e-4). */
export interface FireLearningRates {
  affine?: number;
  nonRigid?: number;
  synthesis?: number;
}

/**
 * The trainer's parameter groups of FIRE's three optimisers: the affine subnets
 * (`model/transformAB/affine/`, `model/transformBA/affine/`), the non-rigid subnets
 * (`…/nonRigid/`); everything else
 * (encoder, decoders, a trainable similarity) takes the trainer's `learningRate` (synthesis).
 */
export function fireParameterGroups(rates: FireLearningRates = {}): ParameterGroup[] {
  return [
    {
      name: 'affine',
      learningRate: rates.affine ?? 1e-5,
      paths: ['model/transformAB/affine/', 'model/transformBA/affine/'],
    },
    {
      name: 'nonRigid',
      learningRate: rates.nonRigid ?? 5e-5,
      paths: ['model/transformAB/nonRigid/', 'model/transformBA/nonRigid/'],
    },
  ];
}

/** Options of {@link trainFire}: the shared {@link TrainingOptions} and the three rates. */
export interface TrainFireOptions extends TrainingOptions {
  /** The network (trained in place). */
  model: Fire;
  /** The three learning rates (default the paper's; `synthesis` overrides `learningRate`). */
  learningRates?: FireLearningRates;
}

/**
 * Trains FIRE end to end with three Adam optimisers (affine 1e-5, non-rigid 5e-5,
 * encoder/decoders 1e-4 by default) on {@link fireLoss}, through {@link trainRegistration}
 * (checkpoints, exact resume, NaN stop, constant tensor count). A `similarity` replaces the
 * registration accuracy term; `regularisationWeight` scales λ.
 *
 * @example
 * ```ts
 * const model = createFire({ ndim: 2, width: 0.125 });
 * await trainFire({ model, epochs: 10, stepsPerEpoch: 50, data: (e, s) => pairOf(e, s) });
 * ```
 */
export async function trainFire(options: TrainFireOptions): Promise<TrainingResult> {
  const o = options ?? ({} as TrainFireOptions);
  if (!(o.model instanceof Fire)) fail('trainFire', `'model' must be a Fire model (createFire)`);
  const { learningRates, ...shared } = o;
  return trainRegistration({
    ...shared,
    learningRate: learningRates?.synthesis ?? o.learningRate ?? 1e-4,
    parameterGroups: o.parameterGroups ?? fireParameterGroups(learningRates),
  });
}

registerNetworkBuilder('fire', (options) => {
  const model = createFire(options as unknown as FireOptions);
  return {
    model,
    predict: (moving, fixed) => {
      const out = model.apply(moving, fixed);
      tf.dispose([out.warped, out.affine, out.nonRigid]);
      return { forward: out.forward, inverse: out.inverse };
    },
  };
});
