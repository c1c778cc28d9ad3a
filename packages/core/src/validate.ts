import { RegkitError } from './errors.js';
import { tf } from './tf.js';

/** Formats a shape for error messages: `[1, 64, 64, 1]`. */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Throws a RegkitError prefixed with the function name. */
export function fail(fn: string, message: string): never {
  throw new RegkitError(`${fn}(): ${message}`);
}

/** Checks that `x` is a float32 tfjs tensor. */
export function assertTensor(fn: string, name: string, x: unknown): asserts x is tf.Tensor {
  if (!(x instanceof tf.Tensor)) {
    fail(fn, `'${name}' must be a tf.Tensor, got ${x === null ? 'null' : typeof x}`);
  }
  if (x.isDisposed) fail(fn, `'${name}' has been disposed`);
}

/**
 * Checks an image `[B, ...spatial, C]` with 2 or 3 spatial axes and returns its
 * number of spatial dimensions.
 */
export function assertImage(fn: string, name: string, x: unknown): 2 | 3 {
  assertTensor(fn, name, x);
  const r = x.rank;
  if (r !== 4 && r !== 5) {
    fail(
      fn,
      `'${name}' must be an image [B, H, W, C] or [B, D, H, W, C] (rank 4 or 5), got shape ${fmtShape(x.shape)}`,
    );
  }
  return (r - 2) as 2 | 3;
}

/**
 * Checks a displacement field `[B, ...spatial, ndim]` with ndim = number of
 * spatial axes (2 or 3) and returns ndim.
 */
export function assertField(fn: string, name: string, u: unknown): 2 | 3 {
  assertTensor(fn, name, u);
  const nd = u.rank - 2;
  if ((nd !== 2 && nd !== 3) || u.shape[u.rank - 1] !== nd) {
    fail(
      fn,
      `'${name}' must be a displacement field [B, H, W, 2] or [B, D, H, W, 3] (last axis = number of spatial axes), got shape ${fmtShape(u.shape)}`,
    );
  }
  return nd as 2 | 3;
}

/**
 * Checks a number of spatial dimensions (an `ndim` option: 2 for `[H, W]`, 3 for
 * `[D, H, W]`) and returns it.
 */
export function assertNdim(fn: string, ndim: unknown): 2 | 3 {
  if (ndim !== 2 && ndim !== 3) fail(fn, `'ndim' must be 2 or 3, got ${JSON.stringify(ndim)}`);
  return ndim;
}

/** Checks a spatial shape: 2 or 3 positive integers. */
export function assertSpatialShape(fn: string, name: string, s: unknown): 2 | 3 {
  if (
    !Array.isArray(s) ||
    (s.length !== 2 && s.length !== 3) ||
    !s.every((v) => Number.isInteger(v) && v > 0)
  ) {
    fail(
      fn,
      `'${name}' must be a spatial shape of 2 or 3 positive integers, got ${JSON.stringify(s)}`,
    );
  }
  return s.length as 2 | 3;
}

/** Expands a scalar or per-axis option to one value per spatial axis. */
export function perAxis(
  fn: string,
  name: string,
  v: number | readonly number[],
  nd: number,
): number[] {
  const arr = typeof v === 'number' ? new Array<number>(nd).fill(v) : [...v];
  if (arr.length !== nd || !arr.every((a) => typeof a === 'number' && Number.isFinite(a))) {
    fail(fn, `'${name}' must be a finite number or ${nd} finite numbers, got ${JSON.stringify(v)}`);
  }
  return arr;
}

/** Checks a string option against its allowed values (MONAI `look_up_option` style). */
export function lookUpOption<T extends string>(
  fn: string,
  name: string,
  value: unknown,
  allowed: readonly T[],
): T {
  if (typeof value !== 'string' || !allowed.includes(value as T)) {
    fail(
      fn,
      `'${name}' must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(value)}`,
    );
  }
  return value as T;
}

/**
 * Checks two images of equal shape `[B, ...S, C]` (named `a` and `b` in messages) and
 * returns the number of spatial axes.
 */
export function assertImagePair(fn: string, a: unknown, b: unknown): 2 | 3 {
  const nd = assertImage(fn, 'a', a);
  assertImage(fn, 'b', b);
  const ta = a as tf.Tensor;
  const tb = b as tf.Tensor;
  if (!tf.util.arraysEqual(ta.shape, tb.shape)) {
    fail(fn, `'a' ${fmtShape(ta.shape)} and 'b' ${fmtShape(tb.shape)} must have the same shape`);
  }
  return nd;
}
