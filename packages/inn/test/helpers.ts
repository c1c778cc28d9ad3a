import { readFileSync } from 'node:fs';
import { type BackendName, initBackend, type Module, mulberry32, tf } from '@regkit/core';
import * as kernels from '@regkit/kernels';
import { expect } from 'vitest';

/** Backends every test runs on (REGKIT_TEST_BACKENDS=cpu,wasm). */
export const BACKENDS: BackendName[] = (process.env.REGKIT_TEST_BACKENDS ?? 'cpu,wasm')
  .split(',')
  .map((b) => b.trim() as BackendName);

/** Selects `name` and registers @regkit/kernels' WebAssembly kernels (3D convolutions). */
export async function useBackend(name: BackendName): Promise<void> {
  expect(await initBackend(name, { kernels })).toBe(name);
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
  weights: Record<string, ArrayFixture>;
}

/** The cases of `fixtures/inn_fixtures.json` (written by `make_inn_fixtures.py`). */
export function loadCases(): FixtureCase[] {
  const url = new URL('./fixtures/inn_fixtures.json', import.meta.url);
  return (JSON.parse(readFileSync(url, 'utf8')) as { cases: FixtureCase[] }).cases;
}

export function tensorOf(a: ArrayFixture): tf.Tensor {
  return tf.tensor(a.data, a.shape, 'float32');
}

/** Fixture weights as tensors by path (the caller disposes them). */
export function weightsOf(c: FixtureCase): Record<string, tf.Tensor> {
  return Object.fromEntries(Object.entries(c.weights).map(([k, v]) => [k, tensorOf(v)]));
}

/** |actual − expected| ≤ atol + rtol |expected| elementwise, equal shapes; reports the worst. */
export function expectClose(
  actual: tf.Tensor,
  expected: ArrayFixture | tf.Tensor,
  atol = 1e-4,
  rtol = 1e-4,
  what = '',
): void {
  const exp =
    expected instanceof tf.Tensor
      ? { shape: expected.shape, data: Array.from(expected.dataSync()) }
      : expected;
  expect(actual.shape, `${what} shape`).toEqual(exp.shape);
  const got = actual.dataSync();
  let worst = -Infinity;
  let at = 0;
  for (let i = 0; i < got.length; i++) {
    const excess = Math.abs(got[i]! - exp.data[i]!) - (atol + rtol * Math.abs(exp.data[i]!));
    if (!(excess <= worst)) {
      worst = excess;
      at = i;
    }
  }
  expect(
    worst,
    `${what} index ${at}: got ${got[at]}, expected ${exp.data[at]} (atol ${atol}, rtol ${rtol})`,
  ).toBeLessThanOrEqual(0);
}

/** max |a − b| as a number. */
export function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = d.dataSync()[0]!;
  d.dispose();
  return v;
}

/**
 * Replaces every trainable weight of `module` by seeded uniform values, so no layer is
 * zero (coupling blocks start as the identity otherwise): matrices and kernels U(±1.5/√fanIn)
 * (fanIn = product of all axes but the last), vectors U(±0.1), the LU factors of invertible
 * 1×1 convolutions U(±0.3).
 */
export function randomizeWeights(module: Module, seed = 1): void {
  const rand = mulberry32(seed);
  for (const [path, v] of module.namedVariables()) {
    if (!v.trainable) continue;
    const leaf = path.split('/').pop()!;
    let a: number;
    if (['lower', 'upper', 'logScale'].includes(leaf)) a = 0.3;
    else if (v.rank === 1) a = 0.1;
    else a = 1.5 / Math.sqrt(v.shape.slice(0, -1).reduce((p, q) => p * q, 1));
    const values = Float32Array.from({ length: v.size }, () => (2 * rand() - 1) * a);
    tf.tidy(() => v.assign(tf.tensor(values, v.shape, 'float32')));
  }
}

/** Seeded uniform tensor in [lo, hi). */
export function uniform(shape: number[], lo: number, hi: number, seed: number): tf.Tensor {
  return tf.randomUniform(shape, lo, hi, 'float32', seed);
}

/**
 * Central finite differences along a random direction d for every input:
 * <∇f(x), d> ≈ (f(x + εd) − f(x − εd)) / 2ε.
 */
export function checkGradient(
  f: (...xs: tf.Tensor[]) => tf.Scalar,
  xs: tf.Tensor[],
  { eps = 1e-2, rtol = 2e-2, atol = 1e-3, seed = 7 } = {},
): void {
  tf.tidy(() => {
    const grads = tf.grads(f)(xs);
    xs.forEach((x, i) => {
      const d = uniform(x.shape, -1, 1, seed + i);
      const analytic = tf.sum(tf.mul(grads[i]!, d)).dataSync()[0]!;
      const at = (s: number) =>
        f(...xs.map((y, j) => (j === i ? tf.add(y, tf.mul(d, s * eps)) : y))).dataSync()[0]!;
      const numeric = (at(1) - at(-1)) / (2 * eps);
      expect(
        Math.abs(analytic - numeric),
        `input ${i}: analytic ${analytic}, numeric ${numeric}`,
      ).toBeLessThanOrEqual(atol + rtol * Math.abs(numeric));
    });
  });
}

/**
 * Gradient of a scalar function of module weights against central finite differences:
 * for each variable, a random direction d, compared with (L(w + εd) − L(w − εd)) / 2ε.
 */
export function checkWeightGradient(
  loss: () => tf.Scalar,
  variables: tf.Variable[],
  { eps = 1e-2, rtol = 2e-2, atol = 1e-3, seed = 17 } = {},
): void {
  const { grads } = tf.variableGrads(loss, variables);
  variables.forEach((v, i) => {
    const g = grads[v.name]!;
    tf.tidy(() => {
      const d = uniform(v.shape, -1, 1, seed + i);
      const analytic = tf.sum(tf.mul(g, d)).dataSync()[0]!;
      const original = tf.clone(v);
      const at = (s: number) => {
        v.assign(tf.add(original, tf.mul(d, s * eps)));
        return tf.tidy(() => loss().dataSync()[0]!);
      };
      const numeric = (at(1) - at(-1)) / (2 * eps);
      v.assign(original);
      expect(
        Math.abs(analytic - numeric),
        `variable ${i} ${v.shape}: analytic ${analytic}, numeric ${numeric}`,
      ).toBeLessThanOrEqual(atol + rtol * Math.abs(numeric));
    });
  });
  tf.dispose(Object.values(grads));
}

/** log|det A| of a dense n×n matrix (row-major, float64) by LU with partial pivoting. */
export function logAbsDet(a: Float64Array, n: number): number {
  const m = Float64Array.from(a);
  let sum = 0;
  for (let k = 0; k < n; k++) {
    let piv = k;
    for (let r = k + 1; r < n; r++)
      if (Math.abs(m[r * n + k]!) > Math.abs(m[piv * n + k]!)) piv = r;
    if (piv !== k) {
      for (let j = 0; j < n; j++) {
        const t = m[k * n + j]!;
        m[k * n + j] = m[piv * n + j]!;
        m[piv * n + j] = t;
      }
    }
    const p = m[k * n + k]!;
    sum += Math.log(Math.abs(p));
    for (let r = k + 1; r < n; r++) {
      const f = m[r * n + k]! / p;
      for (let j = k + 1; j < n; j++) m[r * n + j] = m[r * n + j]! - f * m[k * n + j]!;
    }
  }
  return sum;
}

/**
 * log|det ∂f(x)/∂x| of one batch item x `[1, ...S, C]` (n elements) from the full Jacobian
 * by central finite differences, all 2n perturbed inputs in one batch (f works per item).
 */
export function bruteForceLogDet(f: (x: tf.Tensor) => tf.Tensor, x: tf.Tensor, eps = 1e-3): number {
  const n = x.size;
  const base = x.dataSync();
  const inputs = new Float32Array(2 * n * n);
  for (let j = 0; j < n; j++) {
    for (let s = 0; s < 2; s++) {
      const row = inputs.subarray((2 * j + s) * n, (2 * j + s + 1) * n);
      row.set(base);
      row[j] = row[j]! + (s === 0 ? eps : -eps);
    }
  }
  const out = tf.tidy(() => f(tf.tensor(inputs, [2 * n, ...x.shape.slice(1)])));
  const y = out.dataSync();
  out.dispose();
  // J[i, j] = ∂y_i / ∂x_j
  const jac = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    for (let i = 0; i < n; i++)
      jac[i * n + j] = (y[2 * j * n + i]! - y[(2 * j + 1) * n + i]!) / (2 * eps);
  }
  return logAbsDet(jac, n);
}

/**
 * log|det ∂f(x)/∂x| of one batch item x `[1, ...S, C]` from the full Jacobian built row by
 * row with reverse-mode autodiff (row i = ∇ of output element i): an exact check of an
 * analytic log-determinant against the computation graph itself.
 */
export function autodiffLogDet(f: (x: tf.Tensor) => tf.Tensor, x: tf.Tensor): number {
  const n = x.size;
  const jac = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const g = tf.tidy(() =>
      tf.grad((t: tf.Tensor) => tf.sum(tf.slice(tf.reshape(f(t), [-1]), [i], [1])))(x),
    );
    jac.set(g.dataSync(), i * n);
    g.dispose();
  }
  return logAbsDet(jac, n);
}
