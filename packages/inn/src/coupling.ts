import { assertNdim, fail, fmtShape, lookUpOption, tf } from '@regkit/core';
import { ddwDenseBlockSubnet, denseBlockSubnet } from './dense_block.js';
import { InvertibleConv1x1 } from './invertible_conv.js';
import {
  checkImage,
  checkInteger,
  deriveSeed,
  InvertibleModule,
  type InvertibleOutput,
  type Subnet,
  type SubnetFactory,
} from './types.js';

/**
 * The subnet of a coupling block: `'dense'` ({@link DenseBlock}, default options), `'ddw'`
 * ({@link DdwDenseBlock}, dense block with DDWConv local attention), or any factory.
 */
export type SubnetChoice = 'dense' | 'ddw' | SubnetFactory;

/**
 * The factory of a {@link SubnetChoice}: a factory is returned as is, `'dense'` and `'ddw'`
 * give {@link denseBlockSubnet} and {@link ddwDenseBlockSubnet} with default options.
 *
 * @param fn the caller's name, for the error message of an unknown name
 */
export function resolveSubnet(fn: string, choice: SubnetChoice): SubnetFactory {
  if (typeof choice === 'function') return choice;
  const name = lookUpOption(fn, 'subnet', choice, ['dense', 'ddw'] as const);
  return name === 'dense' ? denseBlockSubnet() : ddwDenseBlockSubnet();
}

/** Options of {@link AffineCouplingBlock}. */
export interface AffineCouplingOptions {
  /** d, the channels of the first part m₁ (default ⌊C/2⌋); m₂ has the C − d others. */
  split?: number;
  /** Bound of the log-scale: s = clamp·(2σ(H) − 1) ∈ (−clamp, clamp) (default 0.8). */
  clamp?: number;
  /** F, G and H (default `'dense'`). */
  subnet?: SubnetChoice;
  /** Mixes the channels with an {@link InvertibleConv1x1} before the coupling (default true). */
  invertibleConv?: boolean;
  /** Seed of the initial weights (default 0); F, G, H and the 1×1 convolution derive theirs. */
  seed?: number;
}

/**
 * Affine coupling block (Dinh et al. 2017, "Real NVP"; INNReg's InvBlock, eqs. 3–6, with the
 * official code's clamped scale and invertible 1×1 convolution):
 *
 *   m = W x (optional LU 1×1 convolution),  [m₁, m₂] = m split at channel d
 *   n₁ = m₁ + F(m₂)
 *   s  = clamp · (2σ(H(n₁)) − 1)
 *   n₂ = m₂ ⊙ exp(s) + G(n₁)
 *   output [n₁, n₂],  log|det| = Σ s (over the m₂ elements) + Σ log|s_W| · voxels
 *
 * and exactly, given [n₁, n₂]: m₂ = (n₂ − G(n₁)) ⊙ exp(−s), m₁ = n₁ − F(m₂), x = W⁻¹ m.
 * F: C − d → d channels, G and H: d → C − d. With the default subnets (last convolution
 * at zero) F = G = H = 0 at initialisation: the block is the 1×1 convolution alone.
 * Weights: `invconv/...`, `F/...`, `G/...`, `H/...`.
 */
export class AffineCouplingBlock extends InvertibleModule {
  readonly split: number;
  readonly clamp: number;
  readonly F: Subnet;
  readonly G: Subnet;
  readonly H: Subnet;
  readonly invconv: InvertibleConv1x1 | null;

  constructor(
    readonly ndim: 2 | 3,
    readonly channels: number,
    options: AffineCouplingOptions = {},
  ) {
    super();
    const fn = 'AffineCouplingBlock';
    assertNdim(fn, ndim);
    checkInteger(fn, 'channels', channels, 2);
    const split = options.split ?? Math.floor(channels / 2);
    if (!Number.isInteger(split) || split < 1 || split > channels - 1) {
      fail(
        fn,
        `'split' must be an integer in [1, ${channels - 1}] (both parts non-empty) for ${channels} channels, got ${split}`,
      );
    }
    this.split = split;
    this.clamp = options.clamp ?? 0.8;
    if (!(this.clamp > 0 && Number.isFinite(this.clamp))) {
      fail(fn, `'clamp' must be a positive number, got ${this.clamp}`);
    }
    const factory = resolveSubnet(fn, options.subnet ?? 'dense');
    const seed = options.seed ?? 0;
    const rest = channels - split;
    this.invconv =
      options.invertibleConv === false
        ? null
        : this.addModule('invconv', new InvertibleConv1x1(channels, { seed: deriveSeed(seed, 0) }));
    try {
      this.F = this.addModule('F', factory(rest, split, ndim, deriveSeed(seed, 1)));
      this.G = this.addModule('G', factory(split, rest, ndim, deriveSeed(seed, 2)));
      this.H = this.addModule('H', factory(split, rest, ndim, deriveSeed(seed, 3)));
    } catch (e) {
      this.dispose(); // the weights made so far
      throw e;
    }
  }

  private parts(x: tf.Tensor): [tf.Tensor, tf.Tensor] {
    const zeros = new Array<number>(x.rank - 1).fill(0);
    const whole = x.shape.slice(0, -1);
    return [
      tf.slice(x, [...zeros, 0], [...whole, this.split]),
      tf.slice(x, [...zeros, this.split], [...whole, this.channels - this.split]),
    ];
  }

  private subnet(name: 'F' | 'G' | 'H', x: tf.Tensor, channels: number): tf.Tensor {
    const y = this[name].apply(x);
    if (
      y.rank !== x.rank ||
      y.shape.slice(0, -1).some((s, i) => s !== x.shape[i]) ||
      y.shape[y.rank - 1] !== channels
    ) {
      fail(
        'AffineCouplingBlock',
        `subnet ${name} must map ${fmtShape(x.shape)} to [${x.shape.slice(0, -1).join(', ')}, ${channels}], got ${fmtShape(y.shape)}`,
      );
    }
    return y;
  }

  /** s = clamp·(2σ(H(n₁)) − 1), the log-scales of the m₂ elements. */
  private logScale(n1: tf.Tensor): tf.Tensor {
    const h = this.subnet('H', n1, this.channels - this.split);
    return tf.mul(tf.sub(tf.mul(tf.sigmoid(h), 2), 1), this.clamp);
  }

  private sumPerItem(s: tf.Tensor): tf.Tensor1D {
    return tf.sum(
      s,
      Array.from({ length: s.rank - 1 }, (_, i) => i + 1),
    ) as tf.Tensor1D;
  }

  /** `[B, ...S, C]` → `[B, ...S, C]` and log|det| `[B]`. */
  forward(x: tf.Tensor): InvertibleOutput {
    checkImage('AffineCouplingBlock.forward', 'x', x, this.ndim, this.channels);
    return tf.tidy(() => {
      let m = x;
      let logDeterminant: tf.Tensor1D = tf.zeros([x.shape[0]!]);
      if (this.invconv) ({ output: m, logDeterminant } = this.invconv.forward(x));
      const [m1, m2] = this.parts(m);
      const n1 = tf.add(m1, this.subnet('F', m2, this.split));
      const s = this.logScale(n1);
      const n2 = tf.add(tf.mul(m2, tf.exp(s)), this.subnet('G', n1, this.channels - this.split));
      return {
        output: tf.concat([n1, n2], -1),
        logDeterminant: tf.add(logDeterminant, this.sumPerItem(s)) as tf.Tensor1D,
      };
    });
  }

  /** The exact inverse: `[B, ...S, C]` → `[B, ...S, C]` and log|det ∂x/∂z| `[B]`. */
  inverse(z: tf.Tensor): InvertibleOutput {
    checkImage('AffineCouplingBlock.inverse', 'z', z, this.ndim, this.channels);
    return tf.tidy(() => {
      const [n1, n2] = this.parts(z);
      const s = this.logScale(n1);
      const m2 = tf.mul(
        tf.sub(n2, this.subnet('G', n1, this.channels - this.split)),
        tf.exp(tf.neg(s)),
      );
      const m1 = tf.sub(n1, this.subnet('F', m2, this.split));
      const m = tf.concat([m1, m2], -1);
      const logDeterminant = tf.neg(this.sumPerItem(s)) as tf.Tensor1D;
      if (!this.invconv) return { output: m, logDeterminant };
      const back = this.invconv.inverse(m);
      return {
        output: back.output,
        logDeterminant: tf.add(logDeterminant, back.logDeterminant) as tf.Tensor1D,
      };
    });
  }
}
