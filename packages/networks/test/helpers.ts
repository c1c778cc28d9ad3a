import { type BackendName, initBackend, tf } from '@regkit/core';
import { expect } from 'vitest';

/** Backends tested (REGKIT_TEST_BACKENDS=cpu,wasm). */
export const BACKENDS: BackendName[] = (process.env.REGKIT_TEST_BACKENDS ?? 'cpu,wasm')
  .split(',')
  .map((s) => s.trim() as BackendName);

let kernelsReady = false;

/** Selects a backend with @regkit/kernels registered (as the CLI and examples run). */
export async function useBackend(name: BackendName): Promise<void> {
  expect(await initBackend(name)).toBe(name);
  if (!kernelsReady) {
    const kernels = await import('@regkit/kernels');
    await kernels.initKernels();
    kernels.registerKernels();
    kernelsReady = true;
  }
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
