import { type BackendName, initBackend, tf } from '@regkit/core';
import { expect } from 'vitest';

/** Backends tested (REGKIT_TEST_BACKENDS=cpu,wasm). */
export const BACKENDS: BackendName[] = (process.env.REGKIT_TEST_BACKENDS ?? 'cpu,wasm')
  .split(',')
  .map((s) => s.trim() as BackendName);

/** Selects a backend with @regkit/kernels registered (as the CLI and examples run). */
export async function useBackend(name: BackendName): Promise<void> {
  expect(await initBackend(name, { kernels: await import('@regkit/kernels') })).toBe(name);
}

export interface ArrayFixture {
  shape: number[];
  data: number[];
}

export function tensorOf(a: ArrayFixture): tf.Tensor {
  return tf.tensor(a.data, a.shape, 'float32');
}

/** max |actual − expected| ≤ atol + rtol·max|expected|. */
export function expectClose(
  actual: tf.Tensor,
  expected: ArrayFixture,
  atol = 1e-4,
  rtol = 1e-4,
): void {
  expect(actual.shape).toEqual(expected.shape);
  const got = actual.dataSync();
  const scale = Math.max(...expected.data.map(Math.abs));
  let worst = 0;
  let at = 0;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i]! - expected.data[i]!);
    if (d > worst) {
      worst = d;
      at = i;
    }
  }
  expect(
    worst,
    `max error ${worst} at ${at}: got ${got[at]}, expected ${expected.data[at]}`,
  ).toBeLessThanOrEqual(atol + rtol * scale);
}

/**
 * The derivative of `loss` along a random direction d of the weights `v` (seeded uniform in
 * [−1, 1]): `analytic` = ⟨∇loss, d⟩ from `tf.variableGrads`, `numeric` the central difference
 * (loss(v + εd) − loss(v − εd)) / 2ε. Restores `v` and disposes what it made.
 */
export function directionalDerivative(
  loss: () => tf.Scalar,
  v: tf.Variable,
  eps: number,
  seed = 3,
): { analytic: number; numeric: number } {
  const { value, grads } = tf.variableGrads(loss, [v]);
  const g = grads[v.name]!;
  const d = tf.randomUniform(v.shape, -1, 1, 'float32', seed);
  const analytic = tf.tidy(() => tf.sum(tf.mul(g, d)).dataSync()[0]!);
  const original = v.clone();
  const at = (sign: number) => {
    tf.tidy(() => v.assign(tf.add(original, tf.mul(d, sign * eps))));
    return tf.tidy(() => loss().dataSync()[0]!);
  };
  const plus = at(1);
  const minus = at(-1);
  v.assign(original);
  tf.dispose([value, g, d, original]);
  return { analytic, numeric: (plus - minus) / (2 * eps) };
}
