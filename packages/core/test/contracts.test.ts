import {
  initBackend,
  integrateVelocity,
  Module,
  outputWarped,
  randomSmoothField,
  resizeField,
  similarityLoss,
  tf,
  velocityDeformation,
  warp,
} from '@regkit/core';
import { beforeAll, describe, expect, it } from 'vitest';

const maxAbs = (a: tf.Tensor, b: tf.Tensor) =>
  tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);

describe('contracts', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  it('similarityLoss takes a loss function or a Module with loss(), and names the bad input', () => {
    const mse = (f: tf.Tensor, m: tf.Tensor) => tf.mean(tf.squaredDifference(f, m)) as tf.Scalar;
    expect(similarityLoss(mse)).toBe(mse);
    class Scaled extends Module {
      readonly w = this.addWeight('w', tf.scalar(2));
      loss(f: tf.Tensor, m: tf.Tensor): tf.Scalar {
        return tf.mul(this.w, tf.mean(tf.squaredDifference(f, m))) as tf.Scalar;
      }
    }
    const module = new Scaled();
    const a = tf.ones([1, 4, 4, 1]);
    const b = tf.zeros([1, 4, 4, 1]);
    const value = similarityLoss(module)(a, b);
    expect(value.dataSync()[0]).toBe(2);
    expect(() => similarityLoss(42 as never, 'trainer')).toThrow(
      /trainer\(\): 'similarity' must be a loss function .* got number/,
    );
    tf.dispose([a, b, value]);
    module.dispose();
  });

  it('outputWarped uses the method’s warped image or warps by forward', () => {
    const m = tf.randomUniform([1, 6, 7, 1], 0, 1, 'float32', 1);
    const u = tf.fill([1, 6, 7, 2], 0.5);
    const given = tf.zeros([1, 6, 7, 1]);
    expect(outputWarped({ forward: u, warped: given }, m)).toBe(given);
    const w = outputWarped({ forward: u }, m);
    const ref = warp(m, u);
    expect(maxAbs(w, ref)).toBe(0);
    tf.dispose([m, u, given, w, ref]);
  });

  it('velocityDeformation is scaling and squaring at full or reduced resolution', () => {
    const n0 = tf.memory().numTensors;
    const v = randomSmoothField([16, 20], { maxDisplacement: 2, controlSpacing: 8, seed: 3 });
    const full = velocityDeformation(v, { steps: 5 });
    const fwd = integrateVelocity(v, { steps: 5 });
    const inv = tf.tidy(() => integrateVelocity(tf.neg(v), { steps: 5 }));
    expect(maxAbs(full.forward, fwd)).toBe(0);
    expect(maxAbs(full.inverse!, inv)).toBe(0);
    const half = velocityDeformation(v, { downsize: 2, inverse: false });
    expect(half.inverse).toBeUndefined();
    const ref = tf.tidy(() =>
      resizeField(integrateVelocity(resizeField(v, [8, 10]), { steps: 7 }), [16, 20]),
    );
    expect(maxAbs(half.forward, ref)).toBe(0);
    expect(() => velocityDeformation(v, { downsize: 0 })).toThrow(
      /'downsize' must be a positive integer, got 0/,
    );
    tf.dispose([v, full.forward, full.inverse!, fwd, inv, half.forward, ref]);
    expect(tf.memory().numTensors).toBe(n0);
  });
});
