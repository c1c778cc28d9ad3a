/**
 * barrierNmiLoss against test/fixtures/barrier_fixtures.json (make_barrier_fixtures.py: the
 * INNReg paper's form and the official code's, in PyTorch, autograd gradients), including the
 * finite linear continuation past the barrier; innregDissimilarity (I itself, the barrier's
 * argument) against the same fixtures' I and its autograd gradients dIdA, dIdB.
 */
import { readFileSync } from 'node:fs';
import { tf } from '@regkit/core';
import { barrierNmiLoss, innregDissimilarity } from '@regkit/losses';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKEND_PATHS, expectClose, type FixtureCase, tensorOf, useBackend } from './helpers.js';

const cases = (
  JSON.parse(
    readFileSync(new URL('./fixtures/barrier_fixtures.json', import.meta.url), 'utf8'),
  ) as {
    cases: FixtureCase[];
  }
).cases;

describe.each(BACKEND_PATHS)('barrierNmiLoss on %s (%s ops)', (backend, path) => {
  beforeAll(() => useBackend(backend, path));

  it.each(cases)('$name', (c) => {
    tf.tidy(() => {
      const a = tensorOf(c.inputs.a!);
      const b = tensorOf(c.inputs.b!);
      const opts = { form: c.params.form as 'paper' | 'code', bound: c.params.bound as number };
      const f = (x: tf.Tensor, y: tf.Tensor) => barrierNmiLoss(x, y, opts);
      expectClose(f(a, b), c.outputs.loss!, 1e-4, 1e-4);
      const [dA, dB] = tf.grads(f)([a, b]);
      expectClose(dA!, c.outputs.dA!, 1e-5, 2e-3);
      expectClose(dB!, c.outputs.dB!, 1e-5, 2e-3);
    });
  });

  it.each(cases)('innregDissimilarity $name', (c) => {
    tf.tidy(() => {
      const a = tensorOf(c.inputs.a!);
      const b = tensorOf(c.inputs.b!);
      const opts = { form: c.params.form as 'paper' | 'code' };
      const f = (x: tf.Tensor, y: tf.Tensor) => innregDissimilarity(x, y, opts);
      expectClose(f(a, b), c.outputs.dissimilarity!, 1e-4, 1e-4);
      const [dA, dB] = tf.grads(f)([a, b]);
      expectClose(dA!, c.outputs.dIdA!, 1e-5, 2e-3);
      expectClose(dB!, c.outputs.dIdB!, 1e-5, 2e-3);
    });
  });

  it('stays finite for constant images and rejects bad options', () => {
    tf.tidy(() => {
      const c = tf.fill([1, 8, 8, 1], 0.5);
      for (const form of ['paper', 'code'] as const) {
        const v = barrierNmiLoss(c, c, { form }).dataSync()[0]!;
        expect(Number.isFinite(v)).toBe(true);
        const g = tf.grad((x: tf.Tensor) => barrierNmiLoss(x, c, { form }))(
          tf.add(c, tf.randomUniform([1, 8, 8, 1], 0, 0.1, 'float32', 1)),
        );
        expect(g.dataSync().every((x) => Number.isFinite(x))).toBe(true);
      }
      expect(() => barrierNmiLoss(c, c, { form: 'other' as 'paper' })).toThrow(
        /'form' must be one of 'paper', 'code'/,
      );
      expect(() => barrierNmiLoss(c, c, { delta: 0 })).toThrow(/'delta' must be > 0/);
      expect(() => innregDissimilarity(c, c, { form: 'x' as 'code' })).toThrow(
        /innregDissimilarity.*'form' must be one of 'paper', 'code'/,
      );
    });
  });
});
