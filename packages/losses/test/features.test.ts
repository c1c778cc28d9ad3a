/**
 * MIND-SSC, MIND loss, cosine similarity and InfoNCE against
 * test/fixtures/feature_fixtures.json (make_feature_fixtures.py: a port of Heinrich's
 * PyTorch MINDSSC, torch cosine_similarity and cross_entropy, autograd gradients).
 */
import { readFileSync } from 'node:fs';
import { tf } from '@regkit/core';
import { cosineSimilarityLoss, infoNceLoss, mindLoss, mindSsc } from '@regkit/losses';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKEND_PATHS, expectClose, type FixtureCase, tensorOf, useBackend } from './helpers.js';

const cases = (
  JSON.parse(
    readFileSync(new URL('./fixtures/feature_fixtures.json', import.meta.url), 'utf8'),
  ) as {
    cases: FixtureCase[];
  }
).cases;

type Fn = (...xs: tf.Tensor[]) => tf.Tensor;
function opOf(c: FixtureCase): Fn {
  const p = c.params as { radius?: number; dilation?: number; temperature?: number };
  const mind = {
    ...(p.radius !== undefined ? { radius: p.radius } : {}),
    ...(p.dilation !== undefined ? { dilation: p.dilation } : {}),
  };
  switch (c.op) {
    case 'mindSsc':
      return (x) => mindSsc(x!, mind);
    case 'mindLoss':
      return (a, b) => mindLoss(a!, b!, mind);
    case 'cosineSimilarityLoss':
      return (a, b) => cosineSimilarityLoss(a!, b!);
    case 'infoNceLoss':
      return (a, b) =>
        infoNceLoss(a!, b!, p.temperature !== undefined ? { temperature: p.temperature } : {});
    default:
      throw new Error(`unknown op ${c.op}`);
  }
}

describe.each(BACKEND_PATHS)('feature losses on %s (%s ops)', (backend, path) => {
  beforeAll(() => useBackend(backend, path));

  it.each(cases)('$name', (c) => {
    tf.tidy(() => {
      const f = opOf(c);
      const names = Object.keys(c.inputs).filter((n) => n !== 'dy');
      const xs = names.map((n) => tensorOf(c.inputs[n]!));
      const outKey = Object.keys(c.outputs).find((k) => !/^d[A-Z]/.test(k))!;
      expectClose(f(...xs), c.outputs[outKey]!, 1e-4, 1e-4);
      const dy = c.inputs.dy ? tensorOf(c.inputs.dy) : null;
      const scalar = (...ys: tf.Tensor[]) =>
        (dy ? tf.sum(tf.mul(f(...ys), dy)) : f(...ys)) as tf.Scalar;
      const grads = tf.grads(scalar)(xs);
      names.forEach((n, i) => {
        const key = `d${n[0]!.toUpperCase()}${n.slice(1)}`;
        if (c.outputs[key]) expectClose(grads[i]!, c.outputs[key]!, 1e-5, 1e-3);
      });
    });
  });

  it('MIND is identical for an image and an intensity-inverted copy (structure, not intensity)', () => {
    tf.tidy(() => {
      const a = tf.randomUniform([1, 9, 10, 8, 1], 0, 1, 'float32', 3);
      const d = tf.max(tf.abs(tf.sub(mindSsc(a), mindSsc(tf.sub(1, a))))).dataSync()[0]!;
      expect(d).toBeLessThan(1e-5);
    });
  });
});
