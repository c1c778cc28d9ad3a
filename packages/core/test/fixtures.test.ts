/**
 * Every op against independent references: test/fixtures/make_core_fixtures.py
 * (PyTorch grid_sample / interpolate / autograd, numpy.gradient, scipy.ndimage,
 * explicit numpy loops), on every test backend, float32, tolerance 1e-4.
 */

import {
  affineField,
  composeFields,
  cubicBSplineField,
  gaussianSmooth,
  integrateVelocity,
  integrateVelocityWithVjp,
  jacobianDeterminant,
  PORTABLE_OPS_FLAG,
  resizeField,
  resizeLinear,
  spatialGradient,
  tf,
  type WarpOptions,
  warp,
} from '@regkit/core';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BACKEND_PATHS, expectClose, loadCases, tensorOf, useBackend } from './helpers.js';

const TOL = 1e-4;

describe.each(BACKEND_PATHS)('fixtures on %s (%s ops)', (backend, path) => {
  beforeAll(() => useBackend(backend, path));
  let scope = 0;
  afterEach(() => {
    scope++;
    tf.disposeVariables();
  });
  void scope;

  it.each(loadCases('warp'))('$name', (c) => {
    tf.tidy(() => {
      const image = tensorOf(c.inputs.image!);
      const field = tensorOf(c.inputs.field!);
      const opts = c.params as WarpOptions;
      expectClose(warp(image, field, opts), c.outputs.out!, TOL);
      if (c.inputs.dy) {
        const dy = tensorOf(c.inputs.dy);
        const [dI, dU] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
          tf.sum(tf.mul(warp(a, b, opts), dy)),
        )([image, field]);
        expectClose(dI!, c.outputs.dImage!, TOL);
        expectClose(dU!, c.outputs.dField!, TOL);
      }
    });
  });

  it.each(loadCases('composeFields'))('$name', (c) => {
    tf.tidy(() => {
      const outer = tensorOf(c.inputs.outer!);
      const inner = tensorOf(c.inputs.inner!);
      const dy = tensorOf(c.inputs.dy!);
      expectClose(composeFields(outer, inner), c.outputs.out!, TOL);
      const [dO, dI] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.mul(composeFields(a, b), dy)),
      )([outer, inner]);
      expectClose(dO!, c.outputs.dOuter!, TOL);
      expectClose(dI!, c.outputs.dInner!, TOL);
    });
  });

  it.each(loadCases('integrateVelocity'))('$name', (c) => {
    tf.tidy(() => {
      const v = tensorOf(c.inputs.v!);
      const dy = tensorOf(c.inputs.dy!);
      const steps = c.params.steps as number;
      expectClose(integrateVelocity(v, { steps }), c.outputs.out!, TOL);
      const dV = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(integrateVelocity(a, { steps }), dy)))(v);
      expectClose(dV, c.outputs.dV!, TOL);
    });
  });

  it.each(loadCases('integrateVelocity'))('integrateVelocityWithVjp $name', (c) => {
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const v = tensorOf(c.inputs.v!);
      const dy = tensorOf(c.inputs.dy!);
      const steps = c.params.steps as number;
      const run = integrateVelocityWithVjp(v, { steps });
      expectClose(run.value, c.outputs.out!, TOL);
      const once = run.vjp(dy);
      expectClose(once, c.outputs.dV!, TOL);
      // callable again, and linear in dy
      const twice = run.vjp(tf.mul(dy, 2));
      expect(tf.max(tf.abs(tf.sub(twice, tf.mul(once, 2)))).dataSync()[0]).toBeLessThan(1e-5);
      run.dispose();
      expect(() => run.vjp(dy)).toThrow(
        /integrateVelocityWithVjp\(\): vjp\(\) called after dispose\(\)/,
      );
      // the portable composite (tfjs autodiff through warp's composite) gives the same gradient
      const wasPortable = tf.env().getBool(PORTABLE_OPS_FLAG);
      tf.env().set(PORTABLE_OPS_FLAG, true);
      try {
        const portable = integrateVelocityWithVjp(v, { steps });
        expectClose(portable.vjp(dy), c.outputs.dV!, TOL);
        portable.dispose();
      } finally {
        tf.env().set(PORTABLE_OPS_FLAG, wasPortable);
      }
    });
    expect(tf.memory().numTensors).toBe(before);
  });

  it.each(loadCases('spatialGradient'))('$name', (c) => {
    tf.tidy(() => expectClose(spatialGradient(tensorOf(c.inputs.x!)), c.outputs.grad!, TOL));
  });

  it.each(loadCases('jacobianDeterminant'))('$name', (c) => {
    tf.tidy(() => expectClose(jacobianDeterminant(tensorOf(c.inputs.field!)), c.outputs.det!, TOL));
  });

  it.each(loadCases('affineField'))('$name', (c) => {
    tf.tidy(() =>
      expectClose(
        affineField(tensorOf(c.inputs.matrix!), c.params.shape as number[]),
        c.outputs.field!,
        TOL,
      ),
    );
  });

  it.each(loadCases('resizeField'))('$name', (c) => {
    tf.tidy(() =>
      expectClose(
        resizeField(tensorOf(c.inputs.field!), c.params.shape as number[]),
        c.outputs.out!,
        TOL,
      ),
    );
  });

  it.each(loadCases('resizeLinear'))('$name', (c) => {
    tf.tidy(() => {
      const x = tensorOf(c.inputs.x!);
      const dy = tensorOf(c.inputs.dy!);
      const shape = c.params.shape as number[];
      expectClose(resizeLinear(x, shape), c.outputs.out!, TOL);
      const dx = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(resizeLinear(a, shape), dy)))(x);
      expectClose(dx, c.outputs.dx!, TOL);
    });
  });

  it.each(loadCases('gaussianSmooth'))('$name', (c) => {
    tf.tidy(() =>
      expectClose(
        gaussianSmooth(tensorOf(c.inputs.x!), c.params.sigma as number | number[]),
        c.outputs.out!,
        TOL,
      ),
    );
  });

  it.each(loadCases('cubicBSplineField'))('$name', (c) => {
    tf.tidy(() => {
      const cp = tensorOf(c.inputs.controlPoints!);
      const dy = tensorOf(c.inputs.dy!);
      const opts = {
        ...(c.params.spacing ? { spacing: c.params.spacing as number[] } : {}),
        ...(c.params.origin ? { origin: c.params.origin as number[] } : {}),
      };
      const shape = c.params.shape as number[];
      expectClose(cubicBSplineField(cp, shape, opts), c.outputs.out!, TOL);
      const dC = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(cubicBSplineField(a, shape, opts), dy)))(
        cp,
      );
      expectClose(dC, c.outputs.dControlPoints!, TOL);
    });
  });
});
