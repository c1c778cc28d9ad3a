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

describe('integrateVelocity backward pass', () => {
  beforeAll(() => useBackend('cpu', 'kernel'));

  /** The plain scaling-and-squaring chain, differentiated by tfjs's autodiff. */
  const chain = (v: tf.Tensor, steps: number): tf.Tensor => {
    let u = tf.mul(v, 1 / 2 ** steps);
    for (let i = 0; i < steps; i++) u = composeFields(u, u);
    return u;
  };

  it('gives autodiff’s gradient while holding less than half its peak memory', async () => {
    const v = tf.randomNormal([1, 16, 16, 16, 3], 0, 1.5, 'float32', 1);
    const w = tf.randomNormal([1, 16, 16, 16, 3], 0, 1, 'float32', 2);
    const grad = (f: (x: tf.Tensor) => tf.Tensor) =>
      tf.grad((x: tf.Tensor) => tf.sum(tf.mul(f(x), w)))(v);
    const ours = grad((x) => integrateVelocity(x, { steps: 7 }));
    const auto = grad((x) => chain(x, 7));
    const diff = tf.max(tf.abs(tf.sub(ours, auto))).dataSync()[0]!;
    expect(diff).toBeLessThanOrEqual(1e-6 * tf.max(tf.abs(auto)).dataSync()[0]!);
    const peak = async (f: (x: tf.Tensor) => tf.Tensor) =>
      (await tf.profile(() => void tf.tidy(() => grad(f)))).peakBytes;
    const fieldBytes = 16 ** 3 * 3 * 4;
    const oursPeak = await peak((x) => integrateVelocity(x, { steps: 7 }));
    const autoPeak = await peak((x) => chain(x, 7));
    expect(oursPeak / fieldBytes).toBeLessThan((0.5 * autoPeak) / fieldBytes);
    tf.dispose([v, w, ours, auto]);
  });
});
