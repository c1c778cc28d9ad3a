import { assertTensor, fail, fmtShape, mulberry32, tf } from '@regkit/core';
import { checkInteger, InvertibleModule, type InvertibleOutput } from './types.js';

/** A random orthogonal C×C matrix (row-major, float64): Gram–Schmidt on seeded Gaussians. */
function randomOrthogonal(c: number, seed: number): Float64Array {
  const rand = mulberry32(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  for (;;) {
    const q = Float64Array.from({ length: c * c }, normal);
    let ok = true;
    // orthonormalise the columns (modified Gram–Schmidt, twice for accuracy)
    for (let j = 0; j < c && ok; j++) {
      for (let pass = 0; pass < 2; pass++) {
        for (let i = 0; i < j; i++) {
          let dot = 0;
          for (let r = 0; r < c; r++) dot += q[r * c + i]! * q[r * c + j]!;
          for (let r = 0; r < c; r++) q[r * c + j] = q[r * c + j]! - dot * q[r * c + i]!;
        }
      }
      let norm = 0;
      for (let r = 0; r < c; r++) norm += q[r * c + j]! ** 2;
      norm = Math.sqrt(norm);
      if (norm < 1e-6) ok = false;
      for (let r = 0; r < c; r++) q[r * c + j] = q[r * c + j]! / norm;
    }
    if (ok) return q;
  }
}

/**
 * LU decomposition with partial pivoting of a C×C matrix A (row-major): A = P L U with P a
 * permutation matrix, L unit lower triangular, U upper triangular (PyTorch's `lu_unpack`).
 */
function luDecompose(
  a: Float64Array,
  c: number,
): { p: Float64Array; l: Float64Array; u: Float64Array } {
  const m = Float64Array.from(a);
  const perm = Array.from({ length: c }, (_, i) => i);
  for (let k = 0; k < c; k++) {
    let piv = k;
    for (let r = k + 1; r < c; r++)
      if (Math.abs(m[r * c + k]!) > Math.abs(m[piv * c + k]!)) piv = r;
    if (piv !== k) {
      for (let j = 0; j < c; j++) {
        const t = m[k * c + j]!;
        m[k * c + j] = m[piv * c + j]!;
        m[piv * c + j] = t;
      }
      [perm[k], perm[piv]] = [perm[piv]!, perm[k]!];
    }
    for (let r = k + 1; r < c; r++) {
      const f = m[r * c + k]! / m[k * c + k]!;
      m[r * c + k] = f;
      for (let j = k + 1; j < c; j++) m[r * c + j] = m[r * c + j]! - f * m[k * c + j]!;
    }
  }
  const l = new Float64Array(c * c);
  const u = new Float64Array(c * c);
  const p = new Float64Array(c * c);
  for (let r = 0; r < c; r++) {
    for (let j = 0; j < c; j++) {
      if (j < r) l[r * c + j] = m[r * c + j]!;
      else u[r * c + j] = m[r * c + j]!;
    }
    l[r * c + r] = 1;
    // row r of L U is row perm[r] of A: A = P (L U) with P[perm[r], r] = 1
    p[perm[r]! * c + r] = 1;
  }
  return { p, l, u };
}

/** (I + N)⁻¹ for a strictly triangular (nilpotent) C×C N: (I − N)(I + N²)(I + N⁴)⋯. */
function unitTriangularInverse(n: tf.Tensor2D, c: number): tf.Tensor2D {
  const eye = tf.eye(c);
  let result: tf.Tensor2D = tf.sub(eye, n);
  let power: tf.Tensor2D = n;
  for (let span = 2; span < c; span *= 2) {
    power = tf.matMul(power, power);
    result = tf.matMul(result, tf.add(eye, power));
  }
  return result;
}

/** Options of {@link InvertibleConv1x1}. */
export interface InvertibleConv1x1Options {
  /** Seed of the random orthogonal initial weight (default 0). */
  seed?: number;
}

/**
 * Invertible 1×1(×1) convolution (Glow, Kingma & Dhariwal 2018) with the LU
 * parametrisation, as the official INNReg code's `InvertibleConv1x1(LU_decomposed=True)`:
 * every voxel's channel vector is multiplied by
 *
 *   W = P L (U + diag(sign(s) ⊙ exp(log|s|)))
 *
 * with P a fixed permutation, L unit lower triangular, U strictly upper triangular, and
 * log|det ∂y/∂x| = Σ_c log|s_c| × (number of voxels) per batch item. The inverse uses
 * W⁻¹ = (U + diag(s))⁻¹ L⁻¹ Pᵀ, the triangular inverses as finite Neumann products, all
 * differentiable. W starts as a random orthogonal matrix (LU of a Gram–Schmidt Q).
 * Weights: `lower`, `upper` `[C, C]` (only the strict triangles are used), `logScale` `[C]`,
 * and the non-trainable `permutation` `[C, C]` and `sign` `[C]`.
 */
export class InvertibleConv1x1 extends InvertibleModule {
  readonly permutation: tf.Variable;
  readonly lower: tf.Variable;
  readonly upper: tf.Variable;
  readonly logScale: tf.Variable;
  readonly sign: tf.Variable;
  private readonly lowerMask: tf.Tensor2D;
  private readonly upperMask: tf.Tensor2D;

  constructor(
    readonly channels: number,
    options: InvertibleConv1x1Options = {},
  ) {
    super();
    const c = checkInteger('InvertibleConv1x1', 'channels', channels, 1);
    const { p, l, u } = luDecompose(randomOrthogonal(c, options.seed ?? 0), c);
    const diag = Array.from({ length: c }, (_, i) => u[i * c + i]!);
    for (let i = 0; i < c; i++) u[i * c + i] = 0;
    this.permutation = this.addWeight(
      'permutation',
      tf.tensor2d(Float32Array.from(p), [c, c]),
      false,
    );
    this.lower = this.addWeight('lower', tf.tensor2d(Float32Array.from(l), [c, c]));
    this.upper = this.addWeight('upper', tf.tensor2d(Float32Array.from(u), [c, c]));
    this.logScale = this.addWeight('logScale', tf.tensor1d(diag.map((d) => Math.log(Math.abs(d)))));
    this.sign = this.addWeight('sign', tf.tensor1d(diag.map((d) => (d < 0 ? -1 : 1))), false);
    const mask = Float32Array.from({ length: c * c }, (_, i) =>
      i % c < Math.floor(i / c) ? 1 : 0,
    );
    this.lowerMask = tf.tensor2d(mask, [c, c]);
    this.upperMask = tf.tidy(() => tf.transpose(tf.tensor2d(mask, [c, c])));
  }

  private factors(): { l: tf.Tensor2D; u: tf.Tensor2D; d: tf.Tensor1D } {
    return {
      l: tf.mul(this.lower, this.lowerMask),
      u: tf.mul(this.upper, this.upperMask),
      d: tf.mul(this.sign, tf.exp(this.logScale)),
    };
  }

  /** W `[C, C]` (y_c = Σ_j W[c, j] x_j). */
  weight(): tf.Tensor2D {
    return tf.tidy(() => {
      const { l, u, d } = this.factors();
      const c = this.channels;
      return tf.matMul(
        this.permutation,
        tf.matMul(tf.add(l, tf.eye(c)), tf.add(u, tf.mul(tf.eye(c), d))),
      ) as tf.Tensor2D;
    });
  }

  /** W⁻¹ `[C, C]`. */
  inverseWeight(): tf.Tensor2D {
    return tf.tidy(() => {
      const { l, u, d } = this.factors();
      const c = this.channels;
      const dInv = tf.reciprocal(d);
      // (D + U)⁻¹ = (I + D⁻¹U)⁻¹ D⁻¹
      const uInv = tf.mul(unitTriangularInverse(tf.mul(tf.reshape(dInv, [c, 1]), u), c), dInv);
      const lInv = unitTriangularInverse(l, c);
      return tf.matMul(tf.matMul(uInv, lInv), this.permutation, false, true) as tf.Tensor2D;
    });
  }

  /** log|det W| × voxels, `[B]`. */
  private logDet(x: tf.Tensor, sign: 1 | -1): tf.Tensor1D {
    const voxels = x.shape.slice(1, -1).reduce((a, b) => a * b, 1);
    return tf.mul(
      tf.ones([x.shape[0]!]),
      tf.mul(tf.sum(this.logScale), sign * voxels),
    ) as tf.Tensor1D;
  }

  private mix(x: tf.Tensor, w: tf.Tensor2D): tf.Tensor {
    const c = this.channels;
    return tf.reshape(tf.matMul(tf.reshape(x, [-1, c]), tf.transpose(w)), x.shape);
  }

  private check(fn: string, x: unknown): void {
    assertTensor(fn, 'x', x);
    if ((x.rank !== 4 && x.rank !== 5) || x.shape[x.rank - 1] !== this.channels) {
      const c = this.channels;
      fail(fn, `'x' must be [B, H, W, ${c}] or [B, D, H, W, ${c}], got ${fmtShape(x.shape)}`);
    }
  }

  /** y = W x per voxel of `x` `[B, ...S, C]`, and log|det| = Σ log|s| · |S|. */
  forward(x: tf.Tensor): InvertibleOutput {
    this.check('InvertibleConv1x1.forward', x);
    return tf.tidy(() => ({
      output: this.mix(x, this.weight()),
      logDeterminant: this.logDet(x, 1),
    }));
  }

  /** x = W⁻¹ y per voxel, and log|det| = −Σ log|s| · |S|. */
  inverse(y: tf.Tensor): InvertibleOutput {
    this.check('InvertibleConv1x1.inverse', y);
    return tf.tidy(() => ({
      output: this.mix(y, this.inverseWeight()),
      logDeterminant: this.logDet(y, -1),
    }));
  }

  override dispose(): void {
    this.lowerMask.dispose();
    this.upperMask.dispose();
    super.dispose();
  }
}
