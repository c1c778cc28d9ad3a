/**
 * The WebAssembly max pooling (`RegkitMaxPool`, `RegkitMaxPoolGrad`, run by core's `maxPool`)
 * and nearest upsampling (`RegkitUpsampleNearest`, `RegkitUpsampleNearestGrad`, core's
 * `upsampleNearest`; the same checks without NaN):
 * against PyTorch (core's layer fixtures: F.max_pool2d / F.max_pool3d and their gradients,
 * packages/core/test/fixtures/make_layer_fixtures.py), bit-identical to core's JavaScript
 * kernels on random data with ties, on NaN and on odd channel counts, bit-identical at 1, 2 and
 * 3 threads, memory flat over 1000 calls.
 */
import { readFileSync } from 'node:fs';
import {
  maxPool,
  RegkitMaxPool,
  RegkitMaxPoolGrad,
  RegkitUpsampleNearest,
  RegkitUpsampleNearestGrad,
  registerJsKernels,
  tf,
  upsampleNearest,
} from '@regkit/core';
import {
  maxPoolGradKernelFunc,
  maxPoolKernelFunc,
  registerKernels,
  setKernelThreads,
  upsampleNearestGradKernelFunc,
  upsampleNearestKernelFunc,
} from '@regkit/kernels';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, expectMemoryFlat, expectSameBits, useKernels } from './helpers.js';

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

interface Stored {
  shape: number[];
  data: number[];
}
interface LayerCase {
  name: string;
  op: string;
  params: { size?: number; factor?: number };
  inputs: { x: Stored; r: Stored };
  outputs: { y: Stored; dx: Stored };
}
const CASES = (
  JSON.parse(
    readFileSync(new URL('../../core/test/fixtures/layer_fixtures.json', import.meta.url), 'utf8'),
  ) as { cases: LayerCase[] }
).cases;
const CASES_UP = CASES.filter((c) => c.op === 'upsample');
const CASES_POOL = CASES.filter((c) => c.op === 'maxpool');

/** y = maxPool(x) and dx = d sum(y · r) / dx, as arrays. */
function poolAndGrad(x: tf.Tensor, r: tf.Tensor, size: number): [Float32Array, Float32Array] {
  return tf.tidy(() => {
    const y = maxPool(x, size);
    const dx = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(maxPool(t, size), r)))(x);
    return [y.dataSync() as Float32Array, dx.dataSync() as Float32Array];
  });
}

/** Runs `fn` with core's JavaScript kernels `names` in place of ours. */
function withJsKernels<T>(names: string[], fn: () => T): T {
  const drop = () => {
    for (const backend of ['cpu', 'wasm']) for (const n of names) tf.unregisterKernel(n, backend);
  };
  drop();
  registerJsKernels();
  try {
    return fn();
  } finally {
    drop();
    registerKernels();
  }
}

describe.each(BACKENDS)('max pooling on %s', (backend) => {
  beforeAll(async () => {
    await useKernels(backend);
  });
  afterAll(async () => {
    await setKernelThreads(1);
  });

  it('runs our kernels', () => {
    expect(tf.getKernel(RegkitMaxPool, backend)?.kernelFunc).toBe(maxPoolKernelFunc);
    expect(tf.getKernel(RegkitMaxPoolGrad, backend)?.kernelFunc).toBe(maxPoolGradKernelFunc);
  });

  it.each(CASES_POOL.map((c) => [c.name, c] as const))('%s: PyTorch', (_n, c) => {
    const x = tf.tensor(c.inputs.x.data, c.inputs.x.shape);
    const r = tf.tensor(c.inputs.r.data, c.inputs.r.shape);
    const [y, dx] = poolAndGrad(x, r, c.params.size!);
    expect(maxAbsDiff(y, c.outputs.y.data)).toBeLessThan(1e-6);
    expect(maxAbsDiff(dx, c.outputs.dx.data)).toBeLessThan(1e-6);
    tf.dispose([x, r]);
  });

  it.each([
    [[2, 10, 12, 5], 2],
    [[1, 6, 8, 4, 9], 2],
    [[2, 9, 6, 3, 4], 3],
    [[1, 12, 12, 1], 4],
  ] as const)(
    '[%s] by %s: bit-identical to core JS kernels (ties, NaN), at 1, 2 and 3 threads',
    async (shape, size) => {
      const n = (shape as readonly number[]).reduce((p, q) => p * q, 1);
      // quarter steps: many ties inside windows; a few NaN
      const values = Float32Array.from({ length: n }, (_, i) =>
        i % 53 === 7 ? Number.NaN : Math.round(4 * Math.sin(i * 12.9898) * 3) / 4,
      );
      const x = tf.tensor(values, [...shape]);
      const yShape = shape.map((s, i) => (i === 0 || i === shape.length - 1 ? s : s / size));
      const r = tf.randomUniform(yShape, -1, 1, 'float32', 5);
      const [yJs, dxJs] = withJsKernels([RegkitMaxPool, RegkitMaxPoolGrad], () =>
        poolAndGrad(x, r, size),
      );
      for (const threads of [1, 2, 3]) {
        await setKernelThreads(threads);
        const [y, dx] = poolAndGrad(x, r, size);
        expectSameBits(y, yJs, `y, ${threads} threads`);
        expectSameBits(dx, dxJs, `dx, ${threads} threads`);
      }
      tf.dispose([x, r]);
    },
  );

  it('1000 pool + upsample forward + backward calls at 2 threads keep numTensors and the kernels memory flat', async () => {
    await setKernelThreads(2);
    const x = tf.randomUniform([1, 24, 24, 24, 8], -1, 1, 'float32', 1);
    const step = () =>
      tf.dispose(tf.grad((t: tf.Tensor) => tf.sum(upsampleNearest(maxPool(t, 2), 2)))(x));
    expectMemoryFlat(step);
    x.dispose();
  }, 300_000);
});

describe.each(BACKENDS)('nearest upsampling on %s', (backend) => {
  beforeAll(async () => {
    await useKernels(backend);
  });
  afterAll(async () => {
    await setKernelThreads(1);
  });

  it('runs our kernels', () => {
    expect(tf.getKernel(RegkitUpsampleNearest, backend)?.kernelFunc).toBe(
      upsampleNearestKernelFunc,
    );
    expect(tf.getKernel(RegkitUpsampleNearestGrad, backend)?.kernelFunc).toBe(
      upsampleNearestGradKernelFunc,
    );
  });

  it.each(CASES_UP.map((c) => [c.name, c] as const))('%s: PyTorch', (_n, c) => {
    const x = tf.tensor(c.inputs.x.data, c.inputs.x.shape);
    const r = tf.tensor(c.inputs.r.data, c.inputs.r.shape);
    const [y, dx] = tf.tidy(() => {
      const f = c.params.factor!;
      const yy = upsampleNearest(x, f);
      const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(upsampleNearest(t, f), r)))(x);
      return [yy.dataSync() as Float32Array, g.dataSync() as Float32Array];
    });
    expect(maxAbsDiff(y!, c.outputs.y.data)).toBeLessThan(1e-6);
    expect(maxAbsDiff(dx!, c.outputs.dx.data)).toBeLessThan(1e-5);
    tf.dispose([x, r]);
  });

  it.each([
    [[2, 5, 6, 7], 2],
    [[1, 3, 4, 5, 9], 2],
    [[1, 4, 3, 2, 4], 3],
  ] as const)(
    '[%s] by %s: bit-identical to core JS kernels, at 1, 2 and 3 threads',
    async (shape, factor) => {
      const x = tf.randomUniform([...shape], -1, 1, 'float32', 3);
      const outShape = shape.map((s, i) => (i === 0 || i === shape.length - 1 ? s : s * factor));
      const dy = tf.randomUniform(outShape, -1, 1, 'float32', 4);
      const run = () =>
        tf.tidy(() => [
          upsampleNearest(x, factor).dataSync() as Float32Array,
          tf
            .grad((t: tf.Tensor) => upsampleNearest(t, factor))(x, dy)
            .dataSync() as Float32Array,
        ]);
      const [yJs, dxJs] = withJsKernels([RegkitUpsampleNearest, RegkitUpsampleNearestGrad], run);
      for (const threads of [1, 2, 3]) {
        await setKernelThreads(threads);
        const [y, dx] = run();
        expectSameBits(y!, yJs!, `y, ${threads} threads`);
        expectSameBits(dx!, dxJs!, `dx, ${threads} threads`);
      }
      tf.dispose([x, dy]);
    },
  );
});
