/** boxSum against independent references (numpy loops), closed forms and finite differences. */
import { readFileSync } from 'node:fs';
import { boxSum, tf } from '@regkit/core';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  BACKEND_PATHS,
  checkGradient,
  expectClose,
  type FixtureCase,
  tensorOf,
  uniform,
  useBackend,
} from './helpers.js';

const cases = (
  JSON.parse(readFileSync(new URL('./fixtures/boxsum_fixtures.json', import.meta.url), 'utf8')) as {
    cases: FixtureCase[];
  }
).cases;

describe.each(BACKEND_PATHS)('boxSum on %s (%s ops)', (backend, path) => {
  beforeAll(() => useBackend(backend, path));

  it.each(cases)('$name', (c) => {
    tf.tidy(() => {
      const x = tensorOf(c.inputs.x!);
      const dy = tensorOf(c.inputs.dy!);
      const window = c.params.window as number | number[];
      expectClose(boxSum(x, window), c.outputs.out!, 1e-4);
      const dx = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(boxSum(a, window), dy)))(x);
      expectClose(dx, c.outputs.dX!, 1e-4);
    });
  });

  it('counts the voxels of the clipped window on a constant image', () => {
    tf.tidy(() => {
      // along an axis of size 5 with window 3 the counts are 2 3 3 3 2
      const out = boxSum(tf.ones([1, 5, 4, 1]), 3);
      expectClose(tf.reshape(tf.slice(out, [0, 0, 0, 0], [1, 5, 1, 1]), [5]), [4, 6, 6, 6, 4], 0);
    });
  });

  it('window 1 is the identity; gradients match finite differences', () => {
    tf.tidy(() => {
      const x = uniform([2, 6, 5, 4, 2], -1, 1, 5);
      expect(tf.max(tf.abs(tf.sub(boxSum(x, 1), x))).dataSync()[0]).toBe(0);
      const w = uniform([2, 6, 5, 4, 2], -1, 1, 6);
      checkGradient((a) => tf.sum(tf.mul(boxSum(a, [3, 5, 3]), w)), [x]);
    });
  });

  it('rejects even windows', () => {
    expect(() => boxSum(tf.zeros([1, 4, 4, 1]), 4)).toThrow(
      /boxSum\(\): 'window' must be odd positive integers, got 4/,
    );
  });
});
