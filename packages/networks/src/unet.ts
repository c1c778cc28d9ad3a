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
    // One stage per convolution, each run in a tidy nested inside the next stage's: a stage's
    // input is freed as soon as its output exists (unless a gradient tape keeps it), so an
    // inference forward holds one stage's tensors and the skip connections at a time, not
    // every activation (a forward at 160×192×224: peak RSS 9.9 → 6.0 GB on cpu).
    // Without a gradient tape, a stage also frees its own intermediates and its input as soon
    // as the next one exists (the convolution's output once activated, the activation once upsampled,
    // the upsampled map once concatenated): a forward at 160×192×224 on wasm then peaks at
    // 2.92 GB of tensors (tf.profile), within the heap's 3.5 GiB budget; with the intermediates
    // kept to the stage's end it threw a RegkitMemoryError at the last decoder stage.
    type State = { h: tf.Tensor; skips: tf.Tensor[] };
    const inference = !tf.engine().isTapeOn();
    const free = (t: tf.Tensor) => {
      if (inference && t !== x) t.dispose();
    };
    const act = (t: tf.Tensor) => {
      const y = tf.leakyRelu(t, this.leakySlope);
      free(t);
      return y;
    };
    const stages: Array<(s: State) => State> = [
      ...this.encoderConvs.map((conv) => ({ h, skips }: State): State => {
        const e = act(conv.apply(h));
        return { h: maxPool(e, 2), skips: [...skips, e] };
      }),
      ...this.decoderConvs.map((conv) => ({ h, skips }: State): State => {
        const a = act(conv.apply(h));
        free(h);
        const d = upsampleNearest(a, 2);
        free(a);
        const out = tf.concat([d, skips[skips.length - 1]!], -1);
        free(d);
        return { h: out, skips: skips.slice(0, -1) };
      }),
      ...this.finalConvs.map((conv) => ({ h, skips }: State): State => {
        const y = act(conv.apply(h));
        free(h);
        return { h: y, skips };
      }),
    ];
    const run = (i: number): State =>
      tf.tidy(() => stages[i]!(i === 0 ? { h: x, skips: [] } : run(i - 1)));
    return tf.tidy(() => run(stages.length - 1).h);
  }
}

/** Creates the VoxelMorph U-Net (see {@link Unet}). */
export function createUnet(options: UnetOptions): Unet {
  return new Unet(options);
}
