import { readFileSync } from 'node:fs';
import {
  type BackendName,
  initBackend,
  PORTABLE_OPS_FLAG,
  registerJsKernels,
  resizeLinear,
  tf,
  type WarpOptions,
  warp,
} from '@regkit/core';
import {
  initKernels,
  KERNEL_NAMES,
  kernelMemoryBytes,
  kernelsRegistered,
  registerKernels,
} from '@regkit/kernels';
import { expect } from 'vitest';

/** Backends the kernels are tested on (override with REGKIT_TEST_BACKENDS=cpu,wasm). */
export const BACKENDS: BackendName[] = (process.env.REGKIT_TEST_BACKENDS ?? 'cpu,wasm')
  .split(',')
  .map((s) => s.trim() as BackendName);

/** Every interpolation × padding. */
export const MODES: Array<Required<WarpOptions>> = [
  { interpolation: 'linear', padding: 'zeros' },
  { interpolation: 'linear', padding: 'border' },
  { interpolation: 'nearest', padding: 'zeros' },
  { interpolation: 'nearest', padding: 'border' },
];

/** Selects `name`, registers this package's kernels and checks they are the ones `warp` runs. */
export async function useKernels(name: BackendName): Promise<void> {
  expect(await initBackend(name)).toBe(name);
  tf.env().set(PORTABLE_OPS_FLAG, false);
  await initKernels();
  registerKernels();
  expect(kernelsRegistered(name)).toBe(true);
}

/**
 * Runs `fn` with core's JavaScript kernels registered instead of ours (then registers ours
 * again): the reference our kernels must match.
 */
export function withCoreJsKernels<T>(fn: () => T): T {
  for (const backend of ['cpu', 'wasm']) {
    // the warp and resize kernels (those core has JavaScript versions of)
    for (const name of KERNEL_NAMES.filter((k) => /^Regkit(Warp|ResizeLinear)/.test(k))) {
      tf.unregisterKernel(name, backend);
    }
  }
  registerJsKernels();
  try {
    expect(kernelsRegistered()).toBe(false);
    return fn();
  } finally {
    registerKernels();
  }
}

/** Runs `fn` on core's portable composite of stock tfjs ops. */
export function withPortableOps<T>(fn: () => T): T {
  tf.env().set(PORTABLE_OPS_FLAG, true);
  try {
    return fn();
  } finally {
    tf.env().set(PORTABLE_OPS_FLAG, false);
  }
}

/** warp(image, field) and the gradients of sum(warp · dy) with respect to image and field. */
export function warpWithGrads(
  image: tf.Tensor,
  field: tf.Tensor,
  dy: tf.Tensor,
  opts: WarpOptions,
): [tf.Tensor, tf.Tensor, tf.Tensor] {
  const out = warp(image, field, opts);
  const [dI, dU] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(warp(a, b, opts), dy)))([
    image,
    field,
  ]);
  return [out, dI!, dU!];
}

/** resizeLinear(x, shape) and the gradient of sum(resizeLinear · dy) with respect to x. */
export function resizeWithGrad(
  x: tf.Tensor,
  shape: number[],
  dy: tf.Tensor,
): [tf.Tensor, tf.Tensor] {
  const dx = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(resizeLinear(a, shape), dy)))(x);
  return [resizeLinear(x, shape), dx];
}

/** max |a − b| (same shapes required). */
export function maxDiff(a: tf.Tensor, b: tf.Tensor | { shape: number[]; data: number[] }): number {
  expect(a.shape).toEqual(b.shape);
  const x = a.dataSync();
  const y = b instanceof tf.Tensor ? b.dataSync() : b.data;
  let worst = 0;
  for (let i = 0; i < x.length; i++) {
    const d = Math.abs(x[i]! - y[i]!);
    if (!(d <= worst)) worst = d;
  }
  return worst;
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

/** Cases of core's PyTorch fixtures (packages/core/test/fixtures/core_fixtures.json) for `op`. */
export function loadCoreCases(op: string): FixtureCase[] {
  const url = new URL('../../core/test/fixtures/core_fixtures.json', import.meta.url);
  const all = JSON.parse(readFileSync(url, 'utf8')) as { cases: FixtureCase[] };
  return all.cases.filter((c) => c.op === op);
}

export function tensorOf(a: ArrayFixture): tf.Tensor {
  return tf.tensor(a.data, a.shape, 'float32');
}

/**
 * Expects `got` and `want` to hold the same float32 values bit for bit (NaN payloads and the
 * sign of zero included), naming the first index that differs.
 */
export function expectSameBits(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  what: string,
): void {
  const g = new Uint32Array(Float32Array.from(got).buffer);
  const w = new Uint32Array(Float32Array.from(want).buffer);
  expect(g.length, what).toBe(w.length);
  let first = -1;
  for (let i = 0; i < g.length && first < 0; i++) if (g[i] !== w[i]) first = i;
  expect(first, `${what}: first difference at ${first}`).toBe(-1);
}

/**
 * Runs `step` 3 times (warm-up), then `calls` times, and expects `tf.memory().numTensors` and
 * `kernelMemoryBytes()` to end where the warm-up left them.
 */
export function expectMemoryFlat(step: () => void, calls = 1000): void {
  for (let i = 0; i < 3; i++) step();
  const tensors = tf.memory().numTensors;
  const size = kernelMemoryBytes();
  for (let i = 0; i < calls; i++) step();
  expect(tf.memory().numTensors).toBe(tensors);
  expect(kernelMemoryBytes()).toBe(size);
}
