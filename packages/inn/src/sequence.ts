import { assertTensor, fail, tf } from '@regkit/core';
import { runRecomputed } from './recompute.js';
import { InvertibleModule, type InvertibleOutput } from './types.js';

/** Options of {@link InvertibleSequence}. */
export interface InvertibleSequenceOptions {
  /**
   * Memory-saving gradients (default false): back-propagation keeps only each block's output
   * and recomputes the block's input with its exact inverse, instead of keeping every
   * activation of every subnet. Peak memory of a training step then grows with one block
   * instead of all of them, for about one more forward pass of compute.
   */
  recomputeGradients?: boolean;
}

/**
 * A composition of invertible modules, T = T_k ∘ … ∘ T₁ (T₁ = `blocks[0]` applied first):
 *
 *   forward:  z = T_k(…T₁(x)),     log|det ∂z/∂x| = Σ_i log|det ∂T_i|
 *   inverse:  x = T₁⁻¹(…T_k⁻¹(z)), the blocks in reverse order
 *
 * Weights `block0/...`, `block1/...`, … The sequence owns its blocks (dispose disposes them).
 * With `recomputeGradients`, blocks with weights run through a custom gradient that stores
 * only their outputs (see {@link InvertibleSequenceOptions}).
 */
export class InvertibleSequence extends InvertibleModule {
  readonly blocks: readonly InvertibleModule[];
  readonly recomputeGradients: boolean;

  constructor(blocks: readonly InvertibleModule[], options: InvertibleSequenceOptions = {}) {
    super();
    if (!Array.isArray(blocks) || blocks.some((b) => !(b instanceof InvertibleModule))) {
      fail('InvertibleSequence', `'blocks' must be an array of InvertibleModule`);
    }
    this.blocks = blocks.map((b, i) => this.addModule(`block${i}`, b));
    this.recomputeGradients = options.recomputeGradients ?? false;
  }

  private step(
    block: InvertibleModule,
    x: tf.Tensor,
    direction: 'forward' | 'inverse',
  ): InvertibleOutput {
    if (this.recomputeGradients && block.trainableVariables.length > 0) {
      return runRecomputed(block, x, direction);
    }
    return direction === 'forward' ? block.forward(x) : block.inverse(x);
  }

  /** z = T(x) and the summed log-determinants `[B]`. */
  forward(x: tf.Tensor): InvertibleOutput {
    assertTensor(`${this.constructor.name}.forward`, 'x', x);
    return tf.tidy(() => {
      let output = x;
      let logDeterminant: tf.Tensor1D = tf.zeros([x.shape[0]!]);
      for (const block of this.blocks) {
        const r = this.step(block, output, 'forward');
        output = r.output;
        logDeterminant = tf.add(logDeterminant, r.logDeterminant) as tf.Tensor1D;
      }
      return { output, logDeterminant };
    });
  }

  /** x = T⁻¹(z) (blocks in reverse order) and log|det ∂x/∂z| `[B]`. */
  inverse(z: tf.Tensor): InvertibleOutput {
    assertTensor(`${this.constructor.name}.inverse`, 'z', z);
    return tf.tidy(() => {
      let output = z;
      let logDeterminant: tf.Tensor1D = tf.zeros([z.shape[0]!]);
      for (let i = this.blocks.length - 1; i >= 0; i--) {
        const r = this.step(this.blocks[i]!, output, 'inverse');
        output = r.output;
        logDeterminant = tf.add(logDeterminant, r.logDeterminant) as tf.Tensor1D;
      }
      return { output, logDeterminant };
    });
  }
}
