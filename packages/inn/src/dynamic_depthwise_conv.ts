import { assertNdim, Dense, fail, initialWeight, lookUpOption, Module, tf } from '@regkit/core';
import { depthwiseConvPerSample } from './depthwise.js';
import { checkImage, checkInteger, deriveSeed } from './types.js';

/**
 * How {@link DynamicDepthwiseConv} makes its per-sample kernel: `'mixture'` (the INNReg
 * paper, eq. 8) mixes K learnt basis kernels, W(x) = Σ_k π_k(x) W_k, π = softmax of an MLP
 * of the pooled input; `'direct'` (the official INNReg code, `DynamicDWConv`, after Han et
 * al.'s DWNet) lets the MLP output the kernel itself.
 */
export type DynamicKernelMode = 'mixture' | 'direct';

/** Options of {@link DynamicDepthwiseConv}. */
export interface DynamicDepthwiseConvOptions {
  /** Kernel size k along every spatial axis, odd (default 7, as the official code). */
  kernelSize?: number;
  /** Kernel generator (default `'mixture'`, the paper's eq. 8). */
  mode?: DynamicKernelMode;
  /** K, the number of basis kernels of `'mixture'` (default 4). */
  bases?: number;
  /** Hidden width of the MLP = max(1, ⌊C / reduction⌋) (default 4, as the official code). */
  reduction?: number;
  /** Adds a learnt per-channel bias, shared by all samples (default true, zeros). */
  bias?: boolean;
  /** Seed of the initial weights (default 0). */
  seed?: number;
}

/**
 * Dynamic depthwise convolution (DDWConv), the local attention of INNReg (Guo 2024, §3.2;
 * Han et al. 2021, "On the connection between local attention and dynamic depth-wise
 * convolution"): a depthwise k^ndim convolution whose kernel is predicted from each input.
 *
 *   g = mean over the voxels of x            [B, C]   (global average pooling)
 *   h = ReLU(g A)                             [B, C/r] (`reduce`, no bias)
 *   'mixture': π = softmax(h P + q)           [B, K],  W(x) = Σ_k π_k W_k    (`expand`, `bases`)
 *   'direct':  W(x) = reshape(h P + q)        [B, ...k, C]                    (`expand`)
 *   y[b, p, c] = Σ_o W(x_b)[o, c] x[b, p + o − (k − 1)/2, c] + bias[c]
 *
 * with zero 'same' padding. Weights: `reduce/weight` `[C, C/r]`, `expand/weight` and
 * `expand/bias` (`[C/r, K]` or `[C/r, C·k^ndim]`, the latter in PyTorch's (c, ...o) order so
 * a `conv2.weight` of the official code maps by a transpose), `bases` `[K, ...k, C]`
 * (mixture only), `bias` `[C]`. Initial weights: PyTorch's defaults (U(±1/√fanIn)), bases
 * from U(±1/√(k^ndim)) as a depthwise convolution's, bias zero.
 */
export class DynamicDepthwiseConv extends Module {
  readonly kernelSize: number;
  readonly mode: DynamicKernelMode;
  readonly numBases: number;
  readonly hidden: number;
  readonly reduce: Dense;
  readonly expand: Dense;
  readonly bases: tf.Variable | null;
  readonly bias: tf.Variable | null;

  constructor(
    readonly ndim: 2 | 3,
    readonly channels: number,
    options: DynamicDepthwiseConvOptions = {},
  ) {
    super();
    const fn = 'DynamicDepthwiseConv';
    assertNdim(fn, ndim);
    checkInteger(fn, 'channels', channels, 1);
    this.kernelSize = checkInteger(fn, 'kernelSize', options.kernelSize ?? 7, 1);
    if (this.kernelSize % 2 !== 1) fail(fn, `'kernelSize' must be odd, got ${this.kernelSize}`);
    this.mode = lookUpOption(fn, 'mode', options.mode ?? 'mixture', ['mixture', 'direct'] as const);
    this.numBases = checkInteger(fn, 'bases', options.bases ?? 4, 1);
    const reduction = checkInteger(fn, 'reduction', options.reduction ?? 4, 1);
    this.hidden = Math.max(1, Math.floor(channels / reduction));
    const seed = options.seed ?? 0;
    const taps = this.kernelSize ** ndim;
    this.reduce = this.addModule(
      'reduce',
      new Dense(channels, this.hidden, { bias: false, seed: deriveSeed(seed, 0) }),
    );
    const outputs = this.mode === 'mixture' ? this.numBases : channels * taps;
    this.expand = this.addModule(
      'expand',
      new Dense(this.hidden, outputs, { seed: deriveSeed(seed, 1) }),
    );
    this.bases =
      this.mode === 'mixture'
        ? this.addWeight(
            'bases',
            initialWeight(
              [this.numBases, ...new Array<number>(ndim).fill(this.kernelSize), channels],
              'torchDefault',
              taps,
              taps,
              deriveSeed(seed, 2),
            ),
          )
        : null;
    this.bias = options.bias === false ? null : this.addWeight('bias', tf.zeros([channels]));
  }

  /** π(x) `[B, K]`, the softmax mixing weights of the basis kernels (`'mixture'` only). */
  mixingWeights(x: tf.Tensor): tf.Tensor2D {
    const fn = 'DynamicDepthwiseConv.mixingWeights';
    checkImage(fn, 'x', x, this.ndim, this.channels);
    if (this.mode !== 'mixture') fail(fn, `only defined in 'mixture' mode`);
    return tf.tidy(() => tf.softmax(this.expand.apply(this.hiddenOf(x))) as tf.Tensor2D);
  }

  /** The per-sample kernels W(x) `[B, ...k, C]`. */
  kernels(x: tf.Tensor): tf.Tensor {
    checkImage('DynamicDepthwiseConv.kernels', 'x', x, this.ndim, this.channels);
    return tf.tidy(() => {
      const b = x.shape[0]!;
      const kShape = new Array<number>(this.ndim).fill(this.kernelSize);
      const out = this.expand.apply(this.hiddenOf(x));
      if (this.mode === 'mixture') {
        const pi = tf.softmax(out);
        const flat = tf.matMul(pi, tf.reshape(this.bases!, [this.numBases, -1]));
        return tf.reshape(flat, [b, ...kShape, this.channels]);
      }
      // PyTorch order (c, ...o) → [B, ...k, C]
      const taps = tf.reshape(out, [b, this.channels, -1]);
      return tf.reshape(tf.transpose(taps, [0, 2, 1]), [b, ...kShape, this.channels]);
    });
  }

  private hiddenOf(x: tf.Tensor): tf.Tensor {
    const axes = Array.from({ length: this.ndim }, (_, i) => i + 1);
    return tf.relu(this.reduce.apply(tf.mean(x, axes)));
  }

  /** Convolves `x` `[B, ...S, C]` with its own kernel W(x): `[B, ...S, C]`. */
  apply(x: tf.Tensor): tf.Tensor {
    checkImage('DynamicDepthwiseConv.apply', 'x', x, this.ndim, this.channels);
    return tf.tidy(() => depthwiseConvPerSample(x, this.kernels(x), this.bias));
  }
}
