/** Long loops keep tf.memory().numTensors flat (no leaks in forward or backward). */

import {
  composeFields,
  cubicBSplineField,
  gaussianSmooth,
  integrateVelocity,
  jacobianDeterminant,
  randomSmoothField,
  resizeField,
  tf,
  warp,
} from '@regkit/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKEND_PATHS, useBackend } from './helpers.js';

describe.each(BACKEND_PATHS)('memory on %s (%s ops)', (backend, path) => {
  beforeAll(() => useBackend(backend, path));

  it('a 100-step optimisation loop through every op keeps numTensors and bytes flat', () => {
    const spatial = [8, 9, 7];
    const fixed = tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 1);
    const moving = tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 2);
    const v = tf.variable(tf.zeros([1, 5, 5, 4, 3]));
    const optimizer = tf.train.adam(0.05);
    const step = () =>
      optimizer.minimize(() => {
        const cp = tf.reshape(v, [1, 5, 5, 4, 3]);
        const vel = gaussianSmooth(cubicBSplineField(cp, spatial), 0.5);
        const u = integrateVelocity(vel, { steps: 3 });
        const w = composeFields(u, resizeField(resizeField(u, [5, 6, 4]), spatial));
        const moved = warp(moving, w);
        const det = jacobianDeterminant(w);
        return tf.add(
          tf.mean(tf.square(tf.sub(moved, fixed))),
          tf.mul(1e-3, tf.mean(tf.square(tf.sub(det, 1)))),
        );
      }, true);
    // warm-up creates the optimiser's slots
    for (let i = 0; i < 3; i++) step()!.dispose();
    const before = tf.memory();
    for (let i = 0; i < 100; i++) step()!.dispose();
    const after = tf.memory();
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numBytes).toBe(before.numBytes);
    optimizer.dispose();
    tf.dispose([fixed, moving, v]);
  });

  it('1000 forward calls of warp and randomSmoothField leak nothing', () => {
    const image = tf.randomUniform([1, 16, 16, 1], 0, 1, 'float32', 3);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 1000; i++) {
      const u = randomSmoothField([16, 16], { maxDisplacement: 2, controlSpacing: 5, seed: i });
      warp(image, u).dispose();
      warp(image, u, { interpolation: 'nearest', padding: 'border' }).dispose();
      u.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
    image.dispose();
  });
});
