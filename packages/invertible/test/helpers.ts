import { readFileSync } from 'node:fs';
import { type BackendName, initBackend, PORTABLE_OPS_FLAG, tf } from '@regkit/core';
import * as kernels from '@regkit/kernels';
import { expect } from 'vitest';

/** Backends every test file runs on (override with REGKIT_TEST_BACKENDS=cpu,wasm). */
export const BACKENDS: BackendName[] = (process.env.REGKIT_TEST_BACKENDS ?? 'cpu,wasm')
  .split(',')
  .map((s) => s.trim() as BackendName);

/**
 * Selects `name` with the WebAssembly-SIMD warp kernels of `@regkit/kernels` (`path: 'kernel'`)
 * or with core's portable composite of stock tfjs ops (`'portable'`).
 */
export async function useBackend(
  name: BackendName,
  path: 'kernel' | 'portable' = 'kernel',
): Promise<void> {
  expect(await initBackend(name, { kernels })).toBe(name);
  expect(kernels.kernelsRegistered(name)).toBe(true);
  tf.env().set(PORTABLE_OPS_FLAG, path === 'portable');
}

export interface ArrayFixture {
  shape: number[];
  data: number[];
}

export interface FixtureCase {
  name: string;
  op: 'invert' | 'spline';
  params: Record<string, unknown>;
  inputs: Record<string, ArrayFixture>;
  outputs: Record<string, ArrayFixture>;
}

export interface BoundFixture {
  ndim: 2 | 3;
  factors: number[];
  bound: number;
}

/** test/fixtures/fixtures.json, written by make_fixtures.py (PyTorch, float64). */
export function loadFixtures(): { cases: FixtureCase[]; bounds: BoundFixture[] } {
  const url = new URL('./fixtures/fixtures.json', import.meta.url);
  return JSON.parse(readFileSync(url, 'utf8')) as { cases: FixtureCase[]; bounds: BoundFixture[] };
}

export function tensorOf(a: ArrayFixture): tf.Tensor {
  return tf.tensor(a.data, a.shape, 'float32');
}

/** max |actual − expected| ≤ atol + rtol |expected|, elementwise (reports the worst element). */
export function expectClose(
  actual: tf.Tensor,
  expected: ArrayFixture | tf.Tensor,
  atol: number,
  rtol = 0,
  what = '',
): void {
  const exp = expected instanceof tf.Tensor ? Array.from(expected.dataSync()) : expected.data;
  const shape = expected instanceof tf.Tensor ? expected.shape : expected.shape;
  expect(actual.shape, `${what} shape`).toEqual(shape);
  const got = actual.dataSync();
  let worst = -Infinity;
  let at = 0;
  for (let i = 0; i < got.length; i++) {
    const excess = Math.abs(got[i]! - exp[i]!) - (atol + rtol * Math.abs(exp[i]!));
    if (excess > worst) {
      worst = excess;
      at = i;
    }
  }
  expect(
    worst,
    `${what} index ${at}: got ${got[at]}, expected ${exp[at]} (atol ${atol}, rtol ${rtol})`,
  ).toBeLessThanOrEqual(0);
}

/** max |x| as a number. */
export function maxAbs(x: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(x))).dataSync()[0]!;
}

/**
 * Central finite differences along random directions d: <∇f(x), d> ≈ (f(x + εd) − f(x − εd)) / 2ε.
 */
export function checkGradient(
  f: (x: tf.Tensor) => tf.Scalar,
  x: tf.Tensor,
  { eps = 1e-2, rtol = 2e-2, atol = 1e-4, seeds = [7, 8] } = {},
): void {
  tf.tidy(() => {
    const grad = tf.grad(f)(x);
    for (const seed of seeds) {
      const d = tf.randomUniform(x.shape, -1, 1, 'float32', seed);
      const analytic = tf.sum(tf.mul(grad, d)).dataSync()[0]!;
      const at = (s: number) => f(tf.add(x, tf.mul(d, s * eps))).dataSync()[0]!;
      const numeric = (at(1) - at(-1)) / (2 * eps);
      expect(
        Math.abs(analytic - numeric),
        `seed ${seed}: analytic ${analytic}, numeric ${numeric}`,
      ).toBeLessThanOrEqual(atol + rtol * Math.abs(numeric));
    }
  });
}
