import { readFileSync } from 'node:fs';
import { type BackendName, initBackend, PORTABLE_OPS_FLAG, tf } from '@regkit/core';
import { expect } from 'vitest';

/** Backends × op paths every loss is tested on (REGKIT_TEST_BACKENDS=cpu,wasm). */
export const BACKEND_PATHS: Array<[BackendName, 'kernel' | 'portable']> = (
  process.env.REGKIT_TEST_BACKENDS ?? 'cpu,wasm'
)
  .split(',')
  .flatMap((b) => [
    [b.trim() as BackendName, 'kernel'],
    [b.trim() as BackendName, 'portable'],
  ]);

export async function useBackend(name: BackendName, path: 'kernel' | 'portable'): Promise<void> {
  expect(await initBackend(name)).toBe(name);
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

export function loadCases(): FixtureCase[] {
  const url = new URL('./fixtures/loss_fixtures.json', import.meta.url);
  return (JSON.parse(readFileSync(url, 'utf8')) as { cases: FixtureCase[] }).cases;
}

export function tensorOf(a: ArrayFixture): tf.Tensor {
  return tf.tensor(a.data, a.shape, 'float32');
}

/** max |actual − expected| ≤ atol + rtol |expected|, elementwise. */
export function expectClose(
  actual: tf.Tensor,
  expected: ArrayFixture,
  atol = 1e-4,
  rtol = 1e-4,
): void {
  expect(actual.shape).toEqual(expected.shape);
  const got = actual.dataSync();
  for (let i = 0; i < got.length; i++) {
    const e = expected.data[i]!;
    const err = Math.abs(got[i]! - e);
    expect(err, `index ${i}: got ${got[i]}, expected ${e}`).toBeLessThanOrEqual(
      atol + rtol * Math.abs(e),
    );
  }
}

/** Central finite differences along random directions: <∇f, d> ≈ (f(x + εd) − f(x − εd)) / 2ε. */
export function checkGradient(
  f: (...xs: tf.Tensor[]) => tf.Scalar,
  xs: tf.Tensor[],
  { eps = 1e-2, rtol = 2e-2, atol = 1e-4, seed = 7 } = {},
): void {
  const grads = tf.grads(f)(xs);
  xs.forEach((x, i) => {
    const d = tf.randomUniform(x.shape, -1, 1, 'float32', seed + i);
    const analytic = tf.sum(tf.mul(grads[i]!, d)).dataSync()[0]!;
    const at = (s: number) =>
      f(...xs.map((y, j) => (j === i ? tf.add(y, tf.mul(d, s * eps)) : y))).dataSync()[0]!;
    const numeric = (at(1) - at(-1)) / (2 * eps);
    expect(
      Math.abs(analytic - numeric),
      `input ${i}: analytic ${analytic}, numeric ${numeric}`,
    ).toBeLessThanOrEqual(atol + rtol * Math.abs(numeric));
  });
}
