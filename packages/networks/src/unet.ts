import { Conv, fail, fmtShape, Module, maxPool, tf, upsampleNearest } from '@regkit/core';

/** Options of {@link createUnet}. */
export interface UnetOptions {
  /** 2 or 3 spatial dimensions. */
  ndim: 2 | 3;
  /** Channels of the input (VoxelMorph: moving + fixed channels, default 2). */
  inChannels?: number;
  /** Features of the encoder convolutions, one level each (default [16, 32, 32, 32]). */
  encoder?: readonly number[];
  /**
   * Features of the decoder convolutions (default [32, 32, 32, 32, 32, 16, 16]): the first
   * `encoder.length` run one per level before upsampling and concatenation with the skip
   * connection, the rest at full resolution after the last concatenation.
   */
  decoder?: readonly number[];
  /** Negative slope of the LeakyReLU after every convolution (default 0.2). */
  leakySlope?: number;
  /** Seed of the initial weights (default 0). */
  seed?: number;
}

/**
 * The VoxelMorph U-Net (`vxm.networks.Unet`, one convolution per level): 3×3(×3)
 * convolutions (padding 1, PyTorch default initialisation) with LeakyReLU(0.2), 2× max
 * pooling after each encoder level, nearest 2× upsampling and concatenation with the
 * encoder output of the same level in the decoder, extra full-resolution convolutions at
 * the end. Spatial sizes must be divisible by 2^levels.
 */
export class Unet extends Module {
  readonly ndim: 2 | 3;
  readonly inChannels: number;
  readonly encoderFeatures: readonly number[];
  readonly decoderFeatures: readonly number[];
  /** Channels of the output. */
  readonly outChannels: number;
  readonly leakySlope: number;
  private readonly encoderConvs: Conv[] = [];
  private readonly decoderConvs: Conv[] = [];
  private readonly finalConvs: Conv[] = [];

  constructor(options: UnetOptions) {
    super();
    const fn = 'createUnet';
    const o = options ?? ({} as UnetOptions);
    if (o.ndim !== 2 && o.ndim !== 3) fail(fn, `'ndim' must be 2 or 3, got ${o.ndim}`);
    this.ndim = o.ndim;
    this.inChannels = o.inChannels ?? 2;
    this.encoderFeatures = [...(o.encoder ?? [16, 32, 32, 32])];
    this.decoderFeatures = [...(o.decoder ?? [32, 32, 32, 32, 32, 16, 16])];
    this.leakySlope = o.leakySlope ?? 0.2;
    const levels = this.encoderFeatures.length;
    const positive = (v: number) => Number.isInteger(v) && v >= 1;
    if (!positive(this.inChannels)) {
      fail(fn, `'inChannels' must be a positive integer, got ${this.inChannels}`);
    }
    if (levels < 1 || !this.encoderFeatures.every(positive)) {
      fail(
        fn,
        `'encoder' must be a non-empty list of positive integers, got ${JSON.stringify(o.encoder)}`,
      );
    }
    if (this.decoderFeatures.length < levels || !this.decoderFeatures.every(positive)) {
      fail(
        fn,
        `'decoder' must list at least ${levels} positive integers (one per encoder level), got ${JSON.stringify(o.decoder)}`,
      );
    }
    let seed = (o.seed ?? 0) * 1000;
    let prev = this.inChannels;
    const skips: number[] = [this.inChannels];
    for (let l = 0; l < levels; l++) {
      const nf = this.encoderFeatures[l]!;
      this.encoderConvs.push(
        this.addModule(`enc${l}`, new Conv(this.ndim, prev, nf, { seed: seed++ })),
      );
      prev = nf;
      skips.push(nf);
    }
    skips.reverse();
    for (let l = 0; l < levels; l++) {
      const nf = this.decoderFeatures[l]!;
      this.decoderConvs.push(
        this.addModule(`dec${l}`, new Conv(this.ndim, prev, nf, { seed: seed++ })),
      );
      prev = nf + skips[l]!;
    }
    for (let i = levels; i < this.decoderFeatures.length; i++) {
      const nf = this.decoderFeatures[i]!;
      this.finalConvs.push(
        this.addModule(`final${i - levels}`, new Conv(this.ndim, prev, nf, { seed: seed++ })),
      );
      prev = nf;
    }
    this.outChannels = prev;
  }

  /** Number of 2× poolings: spatial sizes must be divisible by 2^levels. */
  get levels(): number {
    return this.encoderFeatures.length;
  }

  /** Features `[B, ...S, outChannels]` of `x` `[B, ...S, inChannels]`. */
  apply(x: tf.Tensor): tf.Tensor {
    const fn = 'Unet.apply';
    const nd = this.ndim;
    if (!(x instanceof tf.Tensor) || x.rank !== nd + 2 || x.shape[nd + 1] !== this.inChannels) {
      fail(
        fn,
        `'x' must be [B, ${nd === 2 ? 'H, W' : 'D, H, W'}, ${this.inChannels}], got ${x instanceof tf.Tensor ? fmtShape(x.shape) : typeof x}`,
      );
    }
    const m = 2 ** this.levels;
    if (x.shape.slice(1, -1).some((s) => s % m !== 0)) {
      fail(
        fn,
        `spatial sizes of ${fmtShape(x.shape)} must be divisible by 2^${this.levels} = ${m}`,
      );
    }
    return tf.tidy(() => {
      const act = (t: tf.Tensor) => tf.leakyRelu(t, this.leakySlope);
      const history: tf.Tensor[] = [x];
      let h = x;
      for (const conv of this.encoderConvs) {
        h = act(conv.apply(h));
        history.push(h);
        h = maxPool(h, 2);
      }
      for (const conv of this.decoderConvs) {
        h = act(conv.apply(h));
        h = tf.concat([upsampleNearest(h, 2), history.pop()!], -1);
      }
      for (const conv of this.finalConvs) h = act(conv.apply(h));
      return h;
    });
  }
}

/** Creates the VoxelMorph U-Net (see {@link Unet}). */
export function createUnet(options: UnetOptions): Unet {
  return new Unet(options);
}
