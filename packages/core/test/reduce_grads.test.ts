/**
 * The Sum and Mean gradients core registers in place of tfjs-core's (the ones come from the
 * backend's Fill kernel): against the closed form dL/dx = broadcast(dy) (Sum) and
 * broadcast(dy)/n (Mean), computed here in plain JavaScript, on cpu and wasm, for full,
 * single, multiple and negative axes, with and without keepDims.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../src/index.js';
import { meanGradConfig, sumGradConfig } from '../src/register_gradients.js';

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
