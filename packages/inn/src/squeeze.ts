import { assertTensor, fail, fmtShape, tf } from '@regkit/core';
import { checkInteger, InvertibleModule, type InvertibleOutput } from './types.js';

function checkSqueeze(fn: string, x: unknown, factor: number): void {
  assertTensor(fn, 'x', x);
  if (x.rank !== 4 && x.rank !== 5) {
    fail(fn, `'x' must be [B, H, W, C] or [B, D, H, W, C], got ${fmtShape(x.shape)}`);
  }
  checkInteger(fn, 'factor', factor, 1);
}

/**
 * Invertible squeeze (space-to-depth, Glow's `squeeze2d`; Dinh et al. 2017): every
 * f×f(×f) block of voxels becomes one voxel with f^ndim times the channels,
 *
 *   `[B, H, W, C]` → `[B, H/f, W/f, f²C]`,  `[B, D, H, W, C]` → `[B, D/f, H/f, W/f, f³C]`,
 *
 * output channel c·f^ndim + Σ_a o_a f^(ndim−1−a) holding input channel c at offset o within
 * the block (the channel order of the official code's channels-first `squeeze2d`, not
 * TensorFlow's `space_to_depth`). A permutation of the elements: log-determinant 0.
 *
 * @param x image `[B, ...S, C]`, every spatial size divisible by `factor`
 * @param factor f (default 2)
 */
export function squeeze(x: tf.Tensor, factor = 2): tf.Tensor {
  const fn = 'squeeze';
  checkSqueeze(fn, x, factor);
  const nd = x.rank - 2;
  const spatial = x.shape.slice(1, -1);
  if (spatial.some((n) => n % factor !== 0)) {
    fail(
      fn,
      `every spatial size of 'x' ${fmtShape(x.shape)} must be divisible by the factor ${factor}`,
    );
  }
  if (factor === 1) return tf.clone(x);
  return tf.tidy(() => {
    let y = x;
    const s = [...spatial];
    let c = x.shape[nd + 1]!;
    for (let a = 0; a < nd; a++) {
      // [outer, f, mid, C] → [outer, mid, C, f]: the block offset becomes the fastest channel
      const outer = x.shape[0]! * s.slice(0, a).reduce((p, q) => p * q, 1) * (s[a]! / factor);
      const mid = s.slice(a + 1).reduce((p, q) => p * q, 1);
      y = tf.transpose(tf.reshape(y, [outer, factor, mid, c]), [0, 2, 3, 1]);
      s[a] = s[a]! / factor;
      c *= factor;
    }
    return tf.reshape(y, [x.shape[0]!, ...s, c]);
  });
}

/**
 * Inverse of {@link squeeze}: `[B, ...S, f^ndim·C]` → `[B, ...f·S, C]`.
 *
 * @param y `[B, ...S, C']`, C' divisible by `factor`^ndim
 * @param factor f (default 2)
 */
export function unsqueeze(y: tf.Tensor, factor = 2): tf.Tensor {
  const fn = 'unsqueeze';
  checkSqueeze(fn, y, factor);
  const nd = y.rank - 2;
  const channels = y.shape[nd + 1]!;
  if (channels % factor ** nd !== 0) {
    fail(fn, `the channels of 'y' ${fmtShape(y.shape)} must be divisible by ${factor}^${nd}`);
  }
  if (factor === 1) return tf.clone(y);
  return tf.tidy(() => {
    let x = y;
    const s = y.shape.slice(1, -1);
    let c = channels;
    for (let a = nd - 1; a >= 0; a--) {
      const outer = y.shape[0]! * s.slice(0, a + 1).reduce((p, q) => p * q, 1);
      const mid = s.slice(a + 1).reduce((p, q) => p * q, 1);
      c /= factor;
      x = tf.transpose(tf.reshape(x, [outer, mid, c, factor]), [0, 3, 1, 2]);
      s[a] = s[a]! * factor;
    }
    return tf.reshape(x, [y.shape[0]!, ...s, c]);
  });
}

/**
 * {@link squeeze} as an {@link InvertibleModule} (forward squeezes, inverse unsqueezes;
 * log-determinant 0), to lift images with too few channels for a coupling split.
 */
export class InvertibleSqueeze extends InvertibleModule {
  constructor(readonly factor = 2) {
    super();
    checkInteger('InvertibleSqueeze', 'factor', factor, 1);
  }

  /** `[B, ...S, C]` → `[B, ...S/f, f^ndim·C]`, log-determinant 0. */
  forward(x: tf.Tensor): InvertibleOutput {
    const output = squeeze(x, this.factor);
    return { output, logDeterminant: tf.zeros([x.shape[0]!]) };
  }

  /** `[B, ...S, f^ndim·C]` → `[B, ...f·S, C]`, log-determinant 0. */
  inverse(z: tf.Tensor): InvertibleOutput {
    const output = unsqueeze(z, this.factor);
    return { output, logDeterminant: tf.zeros([z.shape[0]!]) };
  }
}

/** The inverse of {@link InvertibleSqueeze} as a module: forward unsqueezes, inverse squeezes. */
export class InvertibleUnsqueeze extends InvertibleModule {
  constructor(readonly factor = 2) {
    super();
    checkInteger('InvertibleUnsqueeze', 'factor', factor, 1);
  }

  /** `[B, ...S, f^ndim·C]` → `[B, ...f·S, C]`, log-determinant 0. */
  forward(x: tf.Tensor): InvertibleOutput {
    const output = unsqueeze(x, this.factor);
    return { output, logDeterminant: tf.zeros([x.shape[0]!]) };
  }

  /** `[B, ...S, C]` → `[B, ...S/f, f^ndim·C]`, log-determinant 0. */
  inverse(z: tf.Tensor): InvertibleOutput {
    const output = squeeze(z, this.factor);
    return { output, logDeterminant: tf.zeros([z.shape[0]!]) };
  }
}
