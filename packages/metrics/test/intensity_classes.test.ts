/** intensityClasses: 1D k-means on hand-computed cases. */
import { initBackend, tf } from '@regkit/core';
import { intensityClasses } from '@regkit/metrics';
import { beforeAll, describe, expect, it } from 'vitest';

beforeAll(() => initBackend('cpu'));

describe('intensityClasses', () => {
  it('values [0 0 1 1 5 5 9 9], 4 classes: centres start at 1.125, 3.375, 5.625, 7.875', async () => {
    // round 1: {0, 0, 1, 1} → 1.125, {5, 5} → 5.625, {9, 9} → 7.875, none → 3.375;
    // centres 0.5, 3.375 (empty, kept), 5, 9 → ranks 0, 1, 2, 3; no voxel is in class 1
    const x = tf.tensor([0, 0, 1, 1, 5, 5, 9, 9], [1, 8, 1, 1]);
    const c = await intensityClasses(x);
    expect(c.shape).toEqual([1, 8, 1, 1]);
    expect(c.dtype).toBe('float32');
    expect(Array.from(c.dataSync())).toEqual([0, 0, 0, 0, 2, 2, 3, 3]);
  });

  it('two classes split two clusters whatever the order of the voxels', async () => {
    const x = tf.tensor([10, 0.1, 9.5, 0, 0.3, 10.2], [1, 2, 3, 1]);
    const c = await intensityClasses(x, 2);
    expect(Array.from(c.dataSync())).toEqual([1, 0, 1, 0, 0, 1]);
  });

  it('Lloyd iterations move the centres: [0 1 2 10], 2 classes', async () => {
    // start 2.5, 7.5: {0, 1, 2} → 1, {10} → 10; stable
    const c = await intensityClasses(tf.tensor([2, 10, 0, 1], [1, 4, 1]), 2);
    expect(Array.from(c.dataSync())).toEqual([0, 1, 0, 0]);
  });

  it('rejects a bad class count, naming it', async () => {
    await expect(intensityClasses(tf.zeros([1, 2, 2, 1]), 1)).rejects.toThrow(
      /intensityClasses\(\): 'classes' must be an integer ≥ 2, got 1/,
    );
  });
});
