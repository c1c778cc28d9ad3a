import { readFileSync } from 'node:fs';
import { type BackendName, initBackend, PORTABLE_OPS_FLAG, tf } from '@regkit/core';
import { expect } from 'vitest';

/** Backends every op is tested on (override with REGKIT_TEST_BACKENDS=cpu,wasm). */
export const BACKENDS: BackendName[] = (process.env.REGKIT_TEST_BACKENDS ?? 'cpu,wasm')
  .split(',')
  .map((s) => s.trim() as BackendName);

/** Op implementations under test: registered kernels, or the portable composites of stock ops. */
export type OpPath = 'kernel' | 'portable';
export const PATHS: OpPath[] = ['kernel', 'portable'];

/** Every (backend, path) pair, for `describe.each`. */
export const BACKEND_PATHS: Array<[BackendName, OpPath]> = BACKENDS.flatMap((b) =>
  PATHS.map((p) => [b, p] as [BackendName, OpPath]),
);

export async function useBackend(name: BackendName, path: OpPath = 'kernel'): Promise<void> {
  const got = await initBackend(name);
  expect(got).toBe(name);
  tf.env().set(PORTABLE_OPS_FLAG, path === 'portable');
}

export interface ArrayFixture {
  shape: number[];
  data: number[];
}

export interface FixtureCase {
  name: string;
  op: string;
  params: Record<string, unknown>;
  inputs: Record<string, ArrayFixture>;
  outputs: Record<string, ArrayFixture>;
}

export function loadCases(op: string): FixtureCase[] {
  const url = new URL('./fixtures/core_fixtures.json', import.meta.url);
  const all = JSON.parse(readFileSync(url, 'utf8')) as { cases: FixtureCase[] };
  return all.cases.filter((c) => c.op === op);
}

export function tensorOf(a: ArrayFixture): tf.Tensor {
  return tf.tensor(a.data, a.shape, 'float32');
}

/** max |actual − expected| ≤ tol, with the same shape; reports the worst index. */
export function expectClose(
  actual: tf.Tensor,
  expected: ArrayFixture | number[],
  tol = 1e-4,
  shape?: number[],
): void {
  const exp = Array.isArray(expected) ? { data: expected, shape: shape ?? actual.shape } : expected;
  expect(actual.shape).toEqual(exp.shape);
  const got = actual.dataSync();
  let worst = 0;
  let at = -1;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i]! - exp.data[i]!);
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  expect(
    worst,
    `max error ${worst} at flat index ${at}: got ${got[at]}, expected ${exp.data[at]}`,
  ).toBeLessThanOrEqual(tol);
}

/** Seeded uniform tensor in [lo, hi). */
export function uniform(shape: number[], lo: number, hi: number, seed: number): tf.Tensor {
  return tf.randomUniform(shape, lo, hi, 'float32', seed);
}

/**
 * Checks the gradient of a scalar function against central finite differences along
 * random directions: <∇f(x), d> ≈ (f(x + εd) − f(x − εd)) / 2ε.
 */
export function checkGradient(
  f: (...xs: tf.Tensor[]) => tf.Scalar,
  xs: tf.Tensor[],
  { eps = 1e-2, rtol = 2e-2, atol = 1e-3, directions = 2, seed = 7 } = {},
): void {
  const grads = tf.grads(f)(xs);
  for (let i = 0; i < xs.length; i++) {
    for (let r = 0; r < directions; r++) {
      const d = uniform(xs[i]!.shape, -1, 1, seed + 31 * i + r);
      const analytic = tf.sum(tf.mul(grads[i]!, d)).dataSync()[0]!;
      const plus = xs.map((x, j) => (j === i ? tf.add(x, tf.mul(d, eps)) : x));
      const minus = xs.map((x, j) => (j === i ? tf.sub(x, tf.mul(d, eps)) : x));
      const numeric = (f(...plus).dataSync()[0]! - f(...minus).dataSync()[0]!) / (2 * eps);
      const err = Math.abs(analytic - numeric);
      expect(
        err,
        `input ${i}, direction ${r}: analytic ${analytic}, numeric ${numeric}`,
      ).toBeLessThanOrEqual(atol + rtol * Math.abs(numeric));
    }
  }
}
