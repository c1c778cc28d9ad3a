import {
  Conv,
  Dense,
  type FeatureExtractor,
  fail,
  fmtShape,
  Module,
  type RegistrationModel,
  tf,
} from '@regkit/core';
import {
  bezierIntensityAugment,
  contrastiveVoxelLoss,
  sampleForegroundVoxels,
} from '@regkit/losses';
import { blurPool, dnsPairs, dnsRelations, upsampleLinear2x } from './dns.js';
import { bundledWeights } from './pretrained.js';
import { type TrainingOptions, type TrainingResult, trainRegistration } from './train.js';
import { readWeights, saveWeights } from './weights.js';

/** Options of {@link createMasrNet}. */
export interface MasrNetOptions {
  /** 2 or 3 spatial dimensions. */
  ndim: 2 | 3;
  /** Channels of the input image (default 1). */
  channels?: number;
  /** C_d, channels of the output representation D (default 24, the paper's). */
  featureChannels?: number;
  /**
   * Widths of the four encoder levels, full resolution first (default [16, 32, 32, 32]);
   * the decoder mirrors them. Maximum stride 2^(levels − 1) = 8.
   */
  widths?: readonly number[];
  /** C_h, channels of the feature map h the DNS layer acts on (default 16). */
  hiddenChannels?: number;
  /** Dilations of the DNS neighbourhood layouts (default [1, 2]: direct 𝒩 and dilated 𝒩_d). */
  dilations?: readonly number[];
  /** Negative slope of every LeakyReLU (default 0.2). */
  leakySlope?: number;
  /** Leaves out the DNS layer (the ablation "MASR-Net w/o DNS": h goes to the head). */
  withoutDns?: boolean;
  /** Seed of the initial weights (default 0). */
  seed?: number;
}

/**
 * MASR-Net (Mok et al., CVPR 2024): the modality-agnostic structural representation
 * network, a {@link FeatureExtractor} `[B, ...S, channels]` → `[B, ...S, C_d]` with unit-norm
 * feature vectors:
 * 1. a 4-level encoder–decoder: 3×3(×3) convolution + LeakyReLU per level, BlurPool
 *    ({@link blurPool}, [1, 3, 3, 1]) downsampling, linear 2× upsampling
 *    ({@link upsampleLinear2x}) and concatenation with the encoder level, a final convolution
 *    to h `[B, ...S, C_h]`;
 * 2. the DNS layer ({@link dnsLayer}): h^s `[B, ...S, C_h, R]`, R = 24 in 3D (12 pairs × direct
 *    and dilated layouts), 8 in 2D;
 * 3. feature squeezing: one linear map over C_h shared by the R relations (h^c `[B, ...S, R]`),
 *    then conv(R → C_d) – LeakyReLU – conv(C_d → C_d), and L2 normalisation per voxel.
 * Inputs of any size: they are zero-padded to a multiple of 8 and the output cropped back.
 */
export class MasrNet extends Module implements FeatureExtractor {
  readonly ndim: 2 | 3;
  readonly channels: number;
  readonly featureChannels: number;
  readonly hiddenChannels: number;
  readonly widths: readonly number[];
  readonly dilations: readonly number[];
  readonly leakySlope: number;
  readonly withoutDns: boolean;
  /** R, relations per channel of the DNS layer. */
  readonly relations: number;
  private readonly encoder: Conv[] = [];
  private readonly decoder: Conv[] = [];
  private readonly toHidden: Conv;
  private readonly squeeze: Dense | null;
  private readonly head1: Conv;
  private readonly head2: Conv;

  constructor(options: MasrNetOptions) {
    super();
    const fn = 'createMasrNet';
    const o = options ?? ({} as MasrNetOptions);
    if (o.ndim !== 2 && o.ndim !== 3) fail(fn, `'ndim' must be 2 or 3, got ${o.ndim}`);
    this.ndim = o.ndim;
    this.channels = o.channels ?? 1;
    this.featureChannels = o.featureChannels ?? 24;
    this.hiddenChannels = o.hiddenChannels ?? 16;
    this.widths = [...(o.widths ?? [16, 32, 32, 32])];
    this.dilations = [...(o.dilations ?? [1, 2])];
    this.leakySlope = o.leakySlope ?? 0.2;
    this.withoutDns = o.withoutDns ?? false;
    const positive = (v: number) => Number.isInteger(v) && v >= 1;
    for (const [name, v] of [
      ['channels', this.channels],
      ['featureChannels', this.featureChannels],
      ['hiddenChannels', this.hiddenChannels],
    ] as const) {
      if (!positive(v)) fail(fn, `'${name}' must be a positive integer, got ${v}`);
    }
    if (this.widths.length !== 4 || !this.widths.every(positive)) {
      fail(fn, `'widths' must list 4 positive integers, got ${JSON.stringify(o.widths)}`);
    }
    if (this.dilations.length === 0 || !this.dilations.every(positive)) {
      fail(fn, `'dilations' must list positive integers, got ${JSON.stringify(o.dilations)}`);
    }
    let seed = (o.seed ?? 0) * 1000;
    const nd = this.ndim;
    let prev = this.channels;
    this.widths.forEach((w, l) => {
      this.encoder.push(this.addModule(`enc${l}`, new Conv(nd, prev, w, { seed: seed++ })));
      prev = w;
    });
    for (let l = 2; l >= 0; l--) {
      const w = this.widths[l]!;
      this.decoder.push(this.addModule(`dec${l}`, new Conv(nd, prev + w, w, { seed: seed++ })));
      prev = w;
    }
    this.toHidden = this.addModule(
      'hidden',
      new Conv(nd, prev, this.hiddenChannels, { seed: seed++ }),
    );
    this.relations = this.withoutDns
      ? this.hiddenChannels
      : dnsPairs(nd).length * this.dilations.length;
    this.squeeze = this.withoutDns
      ? null
      : this.addModule('squeeze', new Dense(this.hiddenChannels, 1, { seed: seed++ }));
    this.head1 = this.addModule(
      'head1',
      new Conv(nd, this.relations, this.featureChannels, { seed: seed++ }),
    );
    this.head2 = this.addModule(
      'head2',
      new Conv(nd, this.featureChannels, this.featureChannels, { seed: seed++ }),
    );
  }

  /** h `[B, ...S, C_h]`, the encoder–decoder features (input sizes divisible by 8). */
  private backbone(x: tf.Tensor): tf.Tensor {
    const act = (t: tf.Tensor) => tf.leakyRelu(t, this.leakySlope);
    const skips: tf.Tensor[] = [];
    let h = x;
    this.encoder.forEach((conv, l) => {
      h = act(conv.apply(l === 0 ? h : blurPool(h)));
      skips.push(h);
    });
    this.decoder.forEach((conv, i) => {
      const skip = skips[2 - i]!;
      h = act(conv.apply(tf.concat([upsampleLinear2x(h), skip], -1)));
    });
    return this.toHidden.apply(h);
  }

  /**
   * The representation D `[B, ...S, C_d]` (unit L2 norm per voxel) of `image`
   * `[B, ...S, channels]`.
   */
  apply(image: tf.Tensor): tf.Tensor {
    const fn = 'MasrNet.apply';
    const nd = this.ndim;
    if (
      !(image instanceof tf.Tensor) ||
      image.rank !== nd + 2 ||
      image.shape[nd + 1] !== this.channels
    ) {
      fail(
        fn,
        `'image' must be [B, ${nd === 2 ? 'H, W' : 'D, H, W'}, ${this.channels}], got ${image instanceof tf.Tensor ? fmtShape(image.shape) : typeof image}`,
      );
    }
    const spatial = image.shape.slice(1, -1);
    if (spatial.some((s) => s < 3)) {
      fail(fn, `every spatial size must be ≥ 3, got ${fmtShape(image.shape)}`);
    }
    return tf.tidy(() => {
      const x = image.dtype === 'float32' ? image : tf.cast(image, 'float32');
      const padded = spatial.map((s) => Math.ceil(s / 8) * 8);
      const pads = padded.map((p, k) => [0, p - spatial[k]!] as [number, number]);
      const xp = pads.some(([, a]) => a > 0) ? tf.pad(x, [[0, 0], ...pads, [0, 0]]) : x;
      const h = this.backbone(xp);
      let hc: tf.Tensor;
      if (this.squeeze) {
        const hs = dnsRelations(h, { dilations: this.dilations }); // [R, B, ...S, C_h]
        const r = hs.shape[0]!;
        // the shared linear map over C_h, then relations last: [R, B·S] → [B·S, R]
        const flat = tf.reshape(this.squeeze.apply(hs), [r, -1]);
        hc = tf.reshape(tf.transpose(flat), [...h.shape.slice(0, -1), r]); // [B, ...S, R]
      } else {
        hc = h;
      }
      let d = this.head2.apply(tf.leakyRelu(this.head1.apply(hc), this.leakySlope));
      if (pads.some(([, a]) => a > 0)) {
        d = tf.slice(
          d,
          d.shape.map(() => 0),
          [d.shape[0]!, ...spatial, this.featureChannels],
        );
      }
      return tf.div(d, tf.maximum(tf.norm(d, 'euclidean', -1, true), 1e-12));
    });
  }

  /** The options that rebuild this network ({@link createMasrNet}). */
  get options(): MasrNetOptions {
    return {
      ndim: this.ndim,
      channels: this.channels,
      featureChannels: this.featureChannels,
      widths: this.widths,
      hiddenChannels: this.hiddenChannels,
      dilations: this.dilations,
      leakySlope: this.leakySlope,
      withoutDns: this.withoutDns,
    };
  }
}

/**
 * Creates a MASR-Net feature extractor (see {@link MasrNet}).
 *
 * @example
 * ```ts
 * const net = createMasrNet({ ndim: 2 });
 * const d = net.apply(tf.zeros([1, 32, 32, 1])); // [1, 32, 32, 24], unit norm per voxel
 * ```
 */
export function createMasrNet(options: MasrNetOptions): MasrNet {
  return new MasrNet(options);
}

/** Options of {@link trainMasrNet}: the shared trainer options, minus what MASR-Net fixes. */
export interface TrainMasrNetOptions
  extends Omit<
    TrainingOptions,
    'data' | 'similarity' | 'similarityWeight' | 'regulariser' | 'regularisationWeight'
  > {
  /** The network, trained in place. */
  model: MasrNet;
  /**
   * The training image of (epoch, step), `[1, ...S, channels]` with intensities in [0, 1]
   * (deterministic for exact resumption); the trainer disposes it. No labels, no pairs.
   */
  data: (epoch: number, step: number) => tf.Tensor | Promise<tf.Tensor>;
  /** N^k, foreground voxels sampled per step (default 8192, the paper's 8196 rounded). */
  samples?: number;
  /** τ of the contrastive loss (default 0.07). */
  temperature?: number;
  /** Foreground: voxels of the image above this intensity (default 0). */
  foregroundThreshold?: number;
  /** Degree n of the Bézier intensity curves (default 3). */
  controlPoints?: number;
  /** δ, probability of inverting a view's intensities (default 0.5). */
  invertProbability?: number;
  /** Seed of the augmentations and the voxel samples (default 0). */
  seed?: number;
}

/** A step's seed from the run seed, epoch and step (mixes them; any 32-bit value). */
function stepSeed(seed: number, epoch: number, step: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const v of [epoch, step]) {
    h = Math.imul(h ^ v, 0x85ebca6b) >>> 0;
    h = (h ^ (h >>> 13)) >>> 0;
  }
  return h;
}

/**
 * Self-supervised training of MASR-Net (anatomy-aware contrastive learning, Mok et al. 2024
 * §3.3): each step draws two views of one image with independent random monotone Bézier
 * intensity curves (each inverted with probability δ; {@link bezierIntensityAugment}), maps
 * both through the network, and minimises the InfoNCE loss of the features at N^k sampled
 * foreground voxels ({@link contrastiveVoxelLoss}, τ = 0.07): a voxel's two feature vectors
 * are the positive pair, the other sampled voxels of the second view the negatives. No
 * labels and no aligned pairs are needed.
 *
 * It runs on {@link trainRegistration} with a custom objective, so checkpoints (and exact
 * resumption), the NaN stop, progress (the contrastive loss is the `similarity` term) and
 * flat memory are the shared trainer's. Adam, learning rate 1e-4 by default.
 *
 * @example
 * ```ts
 * const model = createMasrNet({ ndim: 2 });
 * await trainMasrNet({ model, epochs: 10, stepsPerEpoch: 20, data: (e, s) => slices[(e + s) % n] });
 * ```
 */
export async function trainMasrNet(options: TrainMasrNetOptions): Promise<TrainingResult> {
  const fn = 'trainMasrNet';
  const o = options ?? ({} as TrainMasrNetOptions);
  if (!(o.model instanceof MasrNet)) fail(fn, `'model' must be a MasrNet (createMasrNet(...))`);
  if (typeof o.data !== 'function') fail(fn, `'data' must be a function (epoch, step) => image`);
  const samples = o.samples ?? 8192;
  const temperature = o.temperature ?? 0.07;
  const seed = o.seed ?? 0;
  const augment = {
    ...(o.controlPoints !== undefined ? { controlPoints: o.controlPoints } : {}),
    ...(o.invertProbability !== undefined ? { invertProbability: o.invertProbability } : {}),
  };
  let indices: tf.Tensor | null = null;
  const model = o.model;
  try {
    return await trainRegistration({
      ...o,
      // MASR-Net is a feature extractor, not a registration model: with a custom objective
      // the trainer only needs its Module side (weights, checkpoints)
      model: model as unknown as RegistrationModel & Module,
      data: async (epoch, step) => {
        const image = await o.data(epoch, step);
        if (!(image instanceof tf.Tensor)) {
          fail(fn, `'data(${epoch}, ${step})' must return an image tensor`);
        }
        const s = stepSeed(seed, epoch, step);
        try {
          indices?.dispose();
          indices = await sampleForegroundVoxels(image, {
            samples,
            threshold: o.foregroundThreshold ?? 0,
            seed: s,
          });
          return {
            moving: bezierIntensityAugment(image, { ...augment, seed: s ^ 0x2545f491 }),
            fixed: bezierIntensityAugment(image, { ...augment, seed: s ^ 0x6c8e9cf5 }),
          };
        } finally {
          image.dispose();
        }
      },
      objective: (pair) => ({
        similarity: contrastiveVoxelLoss(
          model.apply(pair.moving),
          model.apply(pair.fixed),
          indices!,
          {
            temperature,
          },
        ),
        regularisation: tf.scalar(0),
      }),
    });
  } finally {
    (indices as tf.Tensor | null)?.dispose();
  }
}

/** What a saved MASR-Net says about itself (`model.json`'s user metadata). */
export interface MasrNetMetadata {
  /** Free text: the training data, steps and command (the model card in short). */
  description?: string;
  [key: string]: unknown;
}

/**
 * Saves a MASR-Net with the options that rebuild it: `model.json` (weights manifest plus
 * `{ method: 'masrnet', options, ...metadata }`) and `weights.bin` in `dir`, atomically.
 * Node.js only.
 */
export async function saveMasrNet(
  dir: string,
  model: MasrNet,
  metadata: MasrNetMetadata = {},
): Promise<void> {
  if (!(model instanceof MasrNet)) fail('saveMasrNet', `'model' must be a MasrNet`);
  await saveWeights(model, dir, { ...metadata, method: 'masrnet', options: model.options });
}

/**
 * Loads a MASR-Net saved by {@link saveMasrNet} from `dir`, or a trained network bundled with
 * this package when `dir` is omitted or is `{ ndim }`: 2D `BUNDLED_WEIGHTS.masrnet` (the
 * default), 3D `BUNDLED_WEIGHTS['masrnet-3d']` (see examples/dns for their model cards).
 * Node.js only.
 *
 * @returns the network (dispose it when done) and the saved metadata.
 */
export async function loadMasrNet(
  dir?: string | { ndim: 2 | 3 },
): Promise<{ model: MasrNet; metadata: Record<string, unknown> }> {
  const fn = 'loadMasrNet';
  if (dir !== undefined && typeof dir !== 'string' && dir?.ndim !== 2 && dir?.ndim !== 3) {
    fail(fn, `'dir' must be a directory or { ndim: 2 | 3 }, got ${JSON.stringify(dir)}`);
  }
  const bundled = typeof dir === 'string' ? null : dir?.ndim === 3 ? 'masrnet-3d' : 'masrnet';
  const where = bundled ? await bundledWeights(bundled) : (dir as string);
  if (!where) fail(fn, `the bundled ${bundled} weights are not on disk`);
  const { weights, metadata } = await readWeights(where);
  try {
    if (metadata.method !== 'masrnet' || typeof metadata.options !== 'object') {
      fail(fn, `${where}/model.json is not a MASR-Net (method ${JSON.stringify(metadata.method)})`);
    }
    const model = createMasrNet(metadata.options as MasrNetOptions);
    try {
      model.setWeights(weights);
    } catch (e) {
      model.dispose();
      fail(fn, `${where} does not fit a MASR-Net: ${(e as Error).message}`);
    }
    return { model, metadata };
  } finally {
    tf.dispose(Object.values(weights));
  }
}
