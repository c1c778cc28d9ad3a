import { assertNdim, fail, fmtShape, lookUpOption, tf } from '@regkit/core';
import { AffineCouplingBlock, type SubnetChoice } from './coupling.js';
import { InvertibleSequence, type InvertibleSequenceOptions } from './sequence.js';
import { InvertibleSqueeze, InvertibleUnsqueeze } from './squeeze.js';
import {
  checkImage,
  checkInteger,
  deriveSeed,
  type InvertibleModule,
  type InvertibleOutput,
} from './types.js';

/**
 * How a translator gets enough channels for a coupling split: `'squeeze'` (invertible
 * space-to-depth by a factor f before the blocks and its inverse after, so the blocks work on
 * f^ndim·C channels at 1/f resolution), or `'none'` (the blocks work on the C channels).
 */
export type TranslatorLift = 'squeeze' | 'none';

/** Options of {@link createInvertibleTranslator}. */
export interface InvertibleTranslatorOptions {
  /** Spatial dimensions, 2 or 3. */
  ndim: 2 | 3;
  /** C, the channels of the images of both modalities. */
  channels: number;
  /** Number of coupling blocks (default 8, as INNReg). */
  blocks?: number;
  /** F, G and H of every block (default `'ddw'`: dense blocks with DDWConv local attention). */
  subnet?: SubnetChoice;
  /** Channel lift (default `'squeeze'` when C = 1, else `'none'`). */
  lift?: TranslatorLift;
  /** f of the squeeze (default 2); spatial sizes must be divisible by it. */
  squeezeFactor?: number;
  /** d, the channels of m₁ in every block (default half of the channels the blocks see). */
  split?: number;
  /** Bound of the coupling log-scales (default 0.8). */
  clamp?: number;
  /** An invertible 1×1 convolution before every coupling (default true). */
  invertibleConv?: boolean;
  /**
   * Memory-saving gradients (default false): back-propagation recomputes each block's input
   * from its output instead of storing the subnets' activations (see
   * {@link InvertibleSequenceOptions}). Needed to train at 128×128 and above on wasm.
   */
  recomputeGradients?: boolean;
  /** Seed of the initial weights (default 0). */
  seed?: number;
}

/**
 * INNReg's invertible image-to-image translator T: X → Y (Guo 2024, eqs. 1–2): a stack of
 * affine coupling blocks, with an exact inverse T⁻¹: Y → X. An {@link InvertibleSequence}
 * (`forward`/`inverse` give the log-determinant too) with `translate` and `translateBack`
 * returning the images alone.
 */
export class InvertibleTranslator extends InvertibleSequence {
  constructor(
    readonly ndim: 2 | 3,
    readonly channels: number,
    readonly lift: TranslatorLift,
    readonly squeezeFactor: number,
    blocks: InvertibleModule[],
    options: InvertibleSequenceOptions = {},
  ) {
    super(blocks, options);
  }

  /** The coupling blocks (without the squeeze and unsqueeze). */
  get couplings(): AffineCouplingBlock[] {
    return this.blocks.filter((b): b is AffineCouplingBlock => b instanceof AffineCouplingBlock);
  }

  private checkInput(fn: string, name: string, x: tf.Tensor): void {
    checkImage(fn, name, x, this.ndim, this.channels);
    const f = this.squeezeFactor;
    if (this.lift === 'squeeze' && x.shape.slice(1, -1).some((n) => n % f !== 0)) {
      fail(
        fn,
        `every spatial size of '${name}' ${fmtShape(x.shape)} must be divisible by the squeeze factor ${f}`,
      );
    }
  }

  /** y = T(x) `[B, ...S, C]` and log|det ∂y/∂x| `[B]`. */
  override forward(x: tf.Tensor): InvertibleOutput {
    this.checkInput('InvertibleTranslator.forward', 'x', x);
    return super.forward(x);
  }

  /** x = T⁻¹(y) `[B, ...S, C]` and log|det ∂x/∂y| `[B]`. */
  override inverse(y: tf.Tensor): InvertibleOutput {
    this.checkInput('InvertibleTranslator.inverse', 'y', y);
    return super.inverse(y);
  }

  /** fake_y = T(x), `[B, ...S, C]`. */
  translate(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => this.forward(x).output);
  }

  /** recon_x = T⁻¹(y), `[B, ...S, C]`. */
  translateBack(y: tf.Tensor): tf.Tensor {
    return tf.tidy(() => this.inverse(y).output);
  }
}

/**
 * Builds INNReg's translator: `blocks` {@link AffineCouplingBlock}s (each with an LU 1×1
 * convolution and DDWConv dense-block subnets by default), preceded by an invertible squeeze
 * and followed by its inverse when `lift` is `'squeeze'` (the default for 1-channel images,
 * which cannot be split: `[B, H, W, 1]` → `[B, H/2, W/2, 4]`, split 2 + 2).
 *
 * @example
 * ```ts
 * const T = createInvertibleTranslator({ ndim: 2, channels: 1 });
 * const fakeY = T.translate(x);          // [1, 128, 128, 1]
 * const reconX = T.translateBack(fakeY); // = x up to float rounding
 * ```
 */
export function createInvertibleTranslator(
  options: InvertibleTranslatorOptions,
): InvertibleTranslator {
  const fn = 'createInvertibleTranslator';
  if (typeof options !== 'object' || options === null) fail(fn, `'options' must be an object`);
  const ndim = assertNdim(fn, options.ndim);
  const channels = checkInteger(fn, 'channels', options.channels, 1);
  const count = checkInteger(fn, 'blocks', options.blocks ?? 8, 1);
  const lift = lookUpOption(fn, 'lift', options.lift ?? (channels === 1 ? 'squeeze' : 'none'), [
    'squeeze',
    'none',
  ] as const);
  const factor =
    lift === 'squeeze' ? checkInteger(fn, 'squeezeFactor', options.squeezeFactor ?? 2, 2) : 1;
  const width = channels * factor ** ndim;
  if (width < 2) {
    fail(fn, `a coupling block needs at least 2 channels; with 1 channel use lift 'squeeze'`);
  }
  const split = options.split ?? Math.floor(width / 2);
  if (!Number.isInteger(split) || split < 1 || split > width - 1) {
    fail(
      fn,
      `'split' must be an integer in [1, ${width - 1}] for the ${width} channels the blocks see, got ${split}`,
    );
  }
  const seed = options.seed ?? 0;
  const blocks: InvertibleModule[] = [];
  if (lift === 'squeeze') blocks.push(new InvertibleSqueeze(factor));
  for (let i = 0; i < count; i++) {
    blocks.push(
      new AffineCouplingBlock(ndim, width, {
        split,
        clamp: options.clamp ?? 0.8,
        subnet: options.subnet ?? 'ddw',
        invertibleConv: options.invertibleConv ?? true,
        seed: deriveSeed(seed, i),
      }),
    );
  }
  if (lift === 'squeeze') blocks.push(new InvertibleUnsqueeze(factor));
  return new InvertibleTranslator(ndim, channels, lift, factor, blocks, {
    recomputeGradients: options.recomputeGradients ?? false,
  });
}
