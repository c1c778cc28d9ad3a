/**
 * The WebAssembly warp and linear resize against core's PyTorch fixtures (grid_sample,
 * interpolate + autograd), ≤ 1e-4.
 */
import { tf, type WarpOptions, warp } from '@regkit/core';
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
