/**
 * The Sum and Mean gradients core registers in place of tfjs-core's (the ones come from the
 * backend's Fill kernel): against the closed form dL/dx = broadcast(dy) (Sum) and
 * broadcast(dy)/n (Mean), computed here in plain JavaScript, on cpu and wasm, for full,
 * single, multiple and negative axes, with and without keepDims; and the LeakyRelu gradient
 * (x > 0 ? dy : alpha·dy, tfjs ops without a RegkitLeakyReluGrad kernel, that kernel with one).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../src/index.js';
import { leakyReluGradConfig, meanGradConfig, sumGradConfig } from '../src/register_gradients.js';

const shape = [2, 3, 4, 5];
const size = shape.reduce((a, b) => a * b, 1);

/** Row-major multi-index of flat index i. */
function indexOf(i: number): number[] {
  const idx: number[] = [];
  for (let k = shape.length - 1; k >= 0; k--) {
    idx.unshift(i % shape[k]!);
    i = Math.floor(i / shape[k]!);
  }
  return idx;
}

describe.each(['cpu', 'wasm'] as const)('Sum and Mean gradients on %s', (backend) => {
  beforeAll(async () => {
    expect(await initBackend(backend)).toBe(backend);
  });

  it('are the ones core registered (after tfjs-core registered its own)', () => {
    expect(tf.getGradient('Sum')).toBe(sumGradConfig);
    expect(tf.getGradient('Mean')).toBe(meanGradConfig);
  });

  it.each([
    { axis: undefined, keepDims: false },
    { axis: 1, keepDims: false },
    { axis: -1, keepDims: true },
    { axis: [0, 2], keepDims: false },
    { axis: [1, 3], keepDims: true },
  ])('axis $axis, keepDims $keepDims: broadcast(dy) and broadcast(dy)/n', ({ axis, keepDims }) => {
    const before = tf.memory().numTensors;
    const x = tf.randomUniform(shape, -1, 1, 'float32', 5);
    const axes = axis === undefined ? [0, 1, 2, 3] : [axis].flat().map((a) => (a + 4) % 4);
    const outShape = shape.map((n, k) => (axes.includes(k) ? 1 : n));
    const outSize = outShape.reduce((a, b) => a * b, 1);
    const dyValues = Float32Array.from({ length: outSize }, (_, i) => Math.sin(i + 1));
    const n = axes.reduce((p, a) => p * shape[a]!, 1);
    // closed form: every x voxel gets the dy of the output it was reduced into
    const expected = new Float32Array(size);
    for (let i = 0; i < size; i++) {
      const o = indexOf(i).reduce(
        (acc, v, k) => acc * outShape[k]! + (axes.includes(k) ? 0 : v),
        0,
      );
      expected[i] = dyValues[o]!;
    }
    for (const [op, scale] of [
      [tf.sum, 1],
      [tf.mean, n],
    ] as const) {
      const y = op(x, axis, keepDims);
      const dy = tf.tensor(dyValues, y.shape);
      const [g] = tf.grads((t: tf.Tensor) => op(t, axis, keepDims))([x], dy);
      const got = g!.dataSync();
      for (let i = 0; i < size; i++) {
        expect(got[i]).toBeCloseTo(expected[i]! / scale, 6);
      }
      tf.dispose([y, dy, g!]);
    }
    x.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe.each(['cpu', 'wasm'] as const)('LeakyRelu gradient on %s', (backend) => {
  beforeAll(async () => {
    expect(await initBackend(backend)).toBe(backend);
  });

  it('is the one core registered, and without a RegkitLeakyReluGrad kernel it is x > 0 ? dy : alpha·dy', async () => {
    expect(tf.getGradient('LeakyRelu')).toBe(leakyReluGradConfig);
    const { RegkitLeakyReluGrad } = await import('../src/index.js');
    // core's own tests run without @regkit/kernels: the tfjs-ops branch
    expect(tf.getKernel(RegkitLeakyReluGrad, backend)).toBeUndefined();
    const xs = [-2, -0.5, 0, 0.25, 3, -1e-3];
    const gs = [1, -2, 3, 0.5, -1, 7];
    const dx = tf.tidy(() =>
      tf
        .grad((t: tf.Tensor) => tf.leakyRelu(t, 0.1))(tf.tensor1d(xs), tf.tensor1d(gs))
        .dataSync(),
    );
    const a = Math.fround(0.1);
    expect(Array.from(dx)).toEqual(xs.map((x, i) => (x > 0 ? gs[i]! : Math.fround(a * gs[i]!))));
  });

  it('runs a registered RegkitLeakyReluGrad kernel with dy, x and alpha', async () => {
    const { RegkitLeakyReluGrad } = await import('../src/index.js');
    const seen: Array<{ alpha: number; shapes: number[][] }> = [];
    tf.registerKernel({
      kernelName: RegkitLeakyReluGrad,
      backendName: backend,
      kernelFunc: ({ inputs, attrs, backend: b }) => {
        const { dy, x } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo };
        seen.push({
          alpha: (attrs as unknown as { alpha: number }).alpha,
          shapes: [dy.shape, x.shape],
        });
        // a marker value, so the test sees this kernel's output
        const out = tf.fill(x.shape, 42) as tf.Tensor;
        const info = { dataId: out.dataId, shape: out.shape, dtype: out.dtype };
        (b as unknown as { incRef(id: object): void }).incRef(out.dataId);
        out.dispose();
        return info;
      },
    });
    try {
      const dx = tf.tidy(() =>
        tf
          .grad((t: tf.Tensor) => tf.leakyRelu(t, 0.3))(tf.tensor2d([[-1, 2]]))
          .dataSync(),
      );
      expect(Array.from(dx)).toEqual([42, 42]);
      expect(seen).toEqual([
        {
          alpha: 0.3,
          shapes: [
            [1, 2],
            [1, 2],
          ],
        },
      ]);
    } finally {
      tf.unregisterKernel(RegkitLeakyReluGrad, backend);
    }
  });
});
