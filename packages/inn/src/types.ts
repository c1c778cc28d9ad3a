import { assertTensor, fail, fmtShape, Module, type tf } from '@regkit/core';

/**
 * Output of an invertible map z = f(x): the image and, per batch item, the log of the
 * absolute Jacobian determinant log|det ∂z/∂x| (natural log, over every element of one
 * batch item).
 */
export interface InvertibleOutput {
  /** f(x), `[B, ...S', C']`. */
  output: tf.Tensor;
  /** log|det ∂f(x)/∂x| per batch item, `[B]`. */
  logDeterminant: tf.Tensor1D;
}

/**
 * A bijection with its exact inverse: `forward(x)` gives z = f(x) and log|det ∂z/∂x|,
 * `inverse(z)` gives x = f⁻¹(z) and log|det ∂x/∂z| (= −log|det ∂z/∂x| at that x). Both are
 * differentiable with respect to the input and every weight.
 */
export abstract class InvertibleModule extends Module {
  /** z = f(x) and log|det ∂z/∂x| `[B]`. */
  abstract forward(x: tf.Tensor): InvertibleOutput;
  /** x = f⁻¹(z) and log|det ∂x/∂z| `[B]`. */
  abstract inverse(z: tf.Tensor): InvertibleOutput;
}

/**
 * A subnetwork of a coupling block (F, G or H): any {@link Module} mapping
 * `[B, ...S, inChannels]` to `[B, ...S, outChannels]`; it need not be invertible.
 */
export interface Subnet extends Module {
  /** Maps `[B, ...S, inChannels]` to `[B, ...S, outChannels]`. */
  apply(x: tf.Tensor): tf.Tensor;
}

/**
 * Builds a {@link Subnet} `inChannels → outChannels` for `ndim`-dimensional images; `seed`
 * (a different one for F, G and H of every block) seeds its initial weights.
 */
export type SubnetFactory = (
  inChannels: number,
  outChannels: number,
  ndim: 2 | 3,
  seed: number,
) => Subnet;

/** Throws unless `x` is `[B, ...S, channels]` with `ndim` spatial axes. */
export function checkImage(
  fn: string,
  name: string,
  x: unknown,
  ndim: 2 | 3,
  channels?: number,
): void {
  assertTensor(fn, name, x);
  const t = x as tf.Tensor;
  const spatial = ndim === 2 ? 'H, W' : 'D, H, W';
  if (t.rank !== ndim + 2 || (channels !== undefined && t.shape[ndim + 1] !== channels)) {
    fail(
      fn,
      `'${name}' must be [B, ${spatial}, ${channels ?? 'C'}] (rank ${ndim + 2}), got ${fmtShape(t.shape)}`,
    );
  }
}

/** Throws unless `v` is an integer ≥ `min`. */
export function checkInteger(fn: string, name: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    fail(fn, `'${name}' must be an integer ≥ ${min}, got ${String(v)}`);
  }
  return v;
}

/** A seed for part `i` of a module seeded with `seed`, decorrelated from its neighbours. */
export function deriveSeed(seed: number, i: number): number {
  let h = Math.imul((seed ^ 0x9e3779b9) >>> 0, 0x85ebca6b) >>> 0;
  h = (h + Math.imul(i + 1, 0x27d4eb2f)) >>> 0;
  h ^= h >>> 15;
  return Math.imul(h, 0xc2b2ae35) >>> 0;
}
