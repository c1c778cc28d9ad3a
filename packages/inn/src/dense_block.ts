import { assertNdim, Conv, fail, Module, tf } from '@regkit/core';
import {
  DynamicDepthwiseConv,
  type DynamicDepthwiseConvOptions,
} from './dynamic_depthwise_conv.js';
import { checkImage, checkInteger, deriveSeed, type Subnet, type SubnetFactory } from './types.js';

/** Options of {@link DenseBlock}. */
export interface DenseBlockOptions {
  /** Output channels of each of the first four convolutions (default 32). */
  growth?: number;
  /** Kernel size of every convolution, odd (default 3). */
  kernelSize?: number;
  /** Slope of the LeakyReLU for negative inputs (default 0.2). */
  negativeSlope?: number;
  /**
   * Initial kernels of the first four convolutions: Glorot-normal, N(0, 2/(fanIn + fanOut)),
   * times this factor (default 0.1, as the official code's `initialize_weights_xavier(…, 0.1)`);
   * biases start at zero.
   */
  initScale?: number;
  /**
   * Starts the last convolution at zero, so the block outputs 0 and a coupling block built
   * from it is the identity (default true). False: the same scaled Glorot-normal as the others.
   */
  zeroInitLast?: boolean;
  /** Seed of the initial weights (default 0). */
  seed?: number;
}

/** Scaled Glorot-normal convolutions `conv1` … `conv4` of a dense block. */
function growthConvs(
  add: (name: string, conv: Conv) => Conv,
  ndim: 2 | 3,
  inChannels: number,
  growth: number,
  kernelSize: number,
  initScale: number,
  seed: number,
): Conv[] {
  const convs: Conv[] = [];
  const taps = kernelSize ** ndim;
  for (let i = 0; i < 4; i++) {
    const cin = inChannels + i * growth;
    const sigma = initScale * Math.sqrt(2 / ((cin + growth) * taps));
    convs.push(
      add(
        `conv${i + 1}`,
        new Conv(ndim, cin, growth, {
          kernelSize,
          init: { normal: sigma },
          seed: deriveSeed(seed, i),
        }),
      ),
    );
  }
  return convs;
}

function lastConv(
  ndim: 2 | 3,
  inChannels: number,
  outChannels: number,
  kernelSize: number,
  initScale: number,
  zeroInit: boolean,
  seed: number,
): Conv {
  const sigma = initScale * Math.sqrt(2 / ((inChannels + outChannels) * kernelSize ** ndim));
  return new Conv(ndim, inChannels, outChannels, {
    kernelSize,
    init: zeroInit ? 'zeros' : { normal: sigma },
    seed: deriveSeed(seed, 4),
  });
}

function checkCommon(
  fn: string,
  ndim: 2 | 3,
  inChannels: number,
  outChannels: number,
  o: DenseBlockOptions,
) {
  assertNdim(fn, ndim);
  checkInteger(fn, 'inChannels', inChannels, 1);
  checkInteger(fn, 'outChannels', outChannels, 1);
  const growth = checkInteger(fn, 'growth', o.growth ?? 32, 1);
  const kernelSize = checkInteger(fn, 'kernelSize', o.kernelSize ?? 3, 1);
  if (kernelSize % 2 !== 1) fail(fn, `'kernelSize' must be odd, got ${kernelSize}`);
  return {
    growth,
    kernelSize,
    slope: o.negativeSlope ?? 0.2,
    initScale: o.initScale ?? 0.1,
    zeroInitLast: o.zeroInitLast ?? true,
    seed: o.seed ?? 0,
  };
}

/**
 * Densely connected convolutional block (ESRGAN's residual dense block without the
 * residual; the F, G and H of INNReg's coupling blocks, official `DenseBlock`):
 *
 *   x₁ = σ(conv1(x)),  x₂ = σ(conv2([x, x₁])),  x₃ = σ(conv3([x, x₁, x₂])),
 *   x₄ = σ(conv4([x, x₁, x₂, x₃])),  y = conv5([x, x₁, x₂, x₃, x₄])
 *
 * with [·] the channel concatenation, σ = LeakyReLU(0.2), k×k(×k) convolutions with bias and
 * zero padding k//2; conv1–4 output `growth` channels, conv5 `outChannels`. conv5 starts at
 * zero (`zeroInitLast`), so the block starts as the zero map. Weights `conv1/kernel` …
 * `conv5/bias` (kernels `[...k, Cin, Cout]`, Cin in concatenation order).
 */
export class DenseBlock extends Module implements Subnet {
  readonly convs: Conv[];
  readonly growth: number;
  readonly negativeSlope: number;

  constructor(
    readonly ndim: 2 | 3,
    readonly inChannels: number,
    readonly outChannels: number,
    options: DenseBlockOptions = {},
  ) {
    super();
    const o = checkCommon('DenseBlock', ndim, inChannels, outChannels, options);
    this.growth = o.growth;
    this.negativeSlope = o.slope;
    const add = (name: string, conv: Conv) => this.addModule(name, conv);
    this.convs = growthConvs(add, ndim, inChannels, o.growth, o.kernelSize, o.initScale, o.seed);
    this.convs.push(
      this.addModule(
        'conv5',
        lastConv(
          ndim,
          inChannels + 4 * o.growth,
          outChannels,
          o.kernelSize,
          o.initScale,
          o.zeroInitLast,
          o.seed,
        ),
      ),
    );
  }

  /** Maps `x` `[B, ...S, inChannels]` to `[B, ...S, outChannels]`. */
  apply(x: tf.Tensor): tf.Tensor {
    checkImage('DenseBlock.apply', 'x', x, this.ndim, this.inChannels);
    return tf.tidy(() => {
      let features = x;
      for (let i = 0; i < 4; i++) {
        const h = tf.leakyRelu(this.convs[i]!.apply(features), this.negativeSlope);
        features = tf.concat([features, h], -1);
      }
      return this.convs[4]!.apply(features);
    });
  }
}

/** Options of {@link DdwDenseBlock}: the dense block's and the attention's. */
export interface DdwDenseBlockOptions extends DenseBlockOptions {
  /** Options of the dynamic depthwise convolution (kernel 7, 'mixture', K = 4, reduction 4). */
  attention?: Omit<DynamicDepthwiseConvOptions, 'seed'>;
}

/**
 * Dense block with DDWConv local attention (INNReg's attention subnet, official `DWDBNet`):
 * the four growth convolutions of {@link DenseBlock}, then a dynamic depthwise convolution
 * over their concatenation, a LeakyReLU, and the last convolution:
 *
 *   f = [x, x₁, x₂, x₃, x₄],  y = conv5(σ(DDWConv(f)))
 *
 * f has inChannels + 4·growth channels (the official code gives conv4 growth − 1 outputs so
 * that f has exactly 128 channels for its 1-channel halves; here conv4 has `growth` like
 * the others). conv5 starts at zero. Weights as {@link DenseBlock} plus `attention/...`
 * ({@link DynamicDepthwiseConv}).
 */
export class DdwDenseBlock extends Module implements Subnet {
  readonly convs: Conv[];
  readonly attention: DynamicDepthwiseConv;
  readonly growth: number;
  readonly negativeSlope: number;

  constructor(
    readonly ndim: 2 | 3,
    readonly inChannels: number,
    readonly outChannels: number,
    options: DdwDenseBlockOptions = {},
  ) {
    super();
    const o = checkCommon('DdwDenseBlock', ndim, inChannels, outChannels, options);
    this.growth = o.growth;
    this.negativeSlope = o.slope;
    const add = (name: string, conv: Conv) => this.addModule(name, conv);
    this.convs = growthConvs(add, ndim, inChannels, o.growth, o.kernelSize, o.initScale, o.seed);
    const width = inChannels + 4 * o.growth;
    this.attention = this.addModule(
      'attention',
      new DynamicDepthwiseConv(ndim, width, { ...options.attention, seed: deriveSeed(o.seed, 5) }),
    );
    this.convs.push(
      this.addModule(
        'conv5',
        lastConv(ndim, width, outChannels, o.kernelSize, o.initScale, o.zeroInitLast, o.seed),
      ),
    );
  }

  /** Maps `x` `[B, ...S, inChannels]` to `[B, ...S, outChannels]`. */
  apply(x: tf.Tensor): tf.Tensor {
    checkImage('DdwDenseBlock.apply', 'x', x, this.ndim, this.inChannels);
    return tf.tidy(() => {
      let features = x;
      for (let i = 0; i < 4; i++) {
        const h = tf.leakyRelu(this.convs[i]!.apply(features), this.negativeSlope);
        features = tf.concat([features, h], -1);
      }
      const attended = tf.leakyRelu(this.attention.apply(features), this.negativeSlope);
      return this.convs[4]!.apply(attended);
    });
  }
}

/** A {@link SubnetFactory} of {@link DenseBlock}s with these options (the seed is the factory's). */
export function denseBlockSubnet(options: Omit<DenseBlockOptions, 'seed'> = {}): SubnetFactory {
  return (inChannels, outChannels, ndim, seed) =>
    new DenseBlock(ndim, inChannels, outChannels, { ...options, seed });
}

/** A {@link SubnetFactory} of {@link DdwDenseBlock}s with these options. */
export function ddwDenseBlockSubnet(
  options: Omit<DdwDenseBlockOptions, 'seed'> = {},
): SubnetFactory {
  return (inChannels, outChannels, ndim, seed) =>
    new DdwDenseBlock(ndim, inChannels, outChannels, { ...options, seed });
}
