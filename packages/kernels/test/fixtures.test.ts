/**
 * The WebAssembly warp and linear resize against core's PyTorch fixtures (grid_sample,
 * interpolate + autograd), ≤ 1e-4.
 */
import { RegkitWarpGrad, tf, type WarpOptions, warp } from '@regkit/core';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  BACKENDS,
  loadCoreCases,
  maxDiff,
  resizeWithGrad,
  tensorOf,
  useKernels,
  warpWithGrads,
} from './helpers.js';

const TOL = 1e-4;
const CASES = loadCoreCases('warp');
const RESIZE_CASES = loadCoreCases('resizeLinear');

describe.each(BACKENDS)('PyTorch fixtures on %s', (backend) => {
  beforeAll(() => useKernels(backend));

  it('has the warp cases of every mode', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(9);
  });

  it.each(CASES)('$name', (c) => {
    tf.tidy(() => {
      const image = tensorOf(c.inputs.image!);
      const field = tensorOf(c.inputs.field!);
      const opts = c.params as WarpOptions;
      expect(maxDiff(warp(image, field, opts), c.outputs.out!), 'out').toBeLessThanOrEqual(TOL);
      if (c.inputs.dy) {
        const [, dI, dU] = warpWithGrads(image, field, tensorOf(c.inputs.dy), opts);
        expect(maxDiff(dI, c.outputs.dImage!), 'dImage').toBeLessThanOrEqual(TOL);
        expect(maxDiff(dU, c.outputs.dField!), 'dField').toBeLessThanOrEqual(TOL);
        // one gradient alone (the single-gradient kernels), and the combined kernel
        const dy = tensorOf(c.inputs.dy);
        const loss = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(warp(a, b, opts), dy));
        const onlyImage = tf.grad((a: tf.Tensor) => loss(a, field))(image);
        const onlyField = tf.grad((b: tf.Tensor) => loss(image, b))(field);
        expect(maxDiff(onlyImage, c.outputs.dImage!), 'dImage alone').toBeLessThanOrEqual(TOL);
        expect(maxDiff(onlyField, c.outputs.dField!), 'dField alone').toBeLessThanOrEqual(TOL);
        const [bI, bU] = tf.engine().runKernel(
          RegkitWarpGrad,
          { dy, image, field },
          {
            interpolation: opts.interpolation ?? 'linear',
            padding: opts.padding ?? 'zeros',
          },
        ) as tf.Tensor[];
        expect(maxDiff(bI!, c.outputs.dImage!), 'RegkitWarpGrad dImage').toBeLessThanOrEqual(TOL);
        expect(maxDiff(bU!, c.outputs.dField!), 'RegkitWarpGrad dField').toBeLessThanOrEqual(TOL);
      }
    });
  });

  it('has the resizeLinear cases', () => {
    expect(RESIZE_CASES.length).toBeGreaterThanOrEqual(4);
  });

  it.each(RESIZE_CASES)('$name', (c) => {
    tf.tidy(() => {
      const [out, dx] = resizeWithGrad(
        tensorOf(c.inputs.x!),
        c.params.shape as number[],
        tensorOf(c.inputs.dy!),
      );
      expect(maxDiff(out, c.outputs.out!), 'out').toBeLessThanOrEqual(TOL);
      expect(maxDiff(dx, c.outputs.dx!), 'dx').toBeLessThanOrEqual(TOL);
    });
  });
});
