import { readFileSync } from 'node:fs';
import { tf } from '@regkit/core';
import { blurPool, createMasrNet, dnsLayer, dnsPairs, upsampleLinear2x } from '@regkit/networks';
import { beforeAll, describe, expect, it } from 'vitest';
import { type ArrayFixture, BACKENDS, expectClose, tensorOf, useBackend } from './helpers.js';

interface DnsCase {
  name: string;
  op: 'dnsLayer' | 'blurPool' | 'upsampleLinear2x';
  params: { dilations?: number[]; epsilon?: number };
  x: ArrayFixture;
  out: ArrayFixture;
  dy: ArrayFixture;
  dx: ArrayFixture;
}

const cases = (
  JSON.parse(readFileSync(new URL('./fixtures/dns_fixtures.json', import.meta.url), 'utf8')) as {
    cases: DnsCase[];
  }
).cases;

function run(c: DnsCase, x: tf.Tensor): tf.Tensor {
  if (c.op === 'dnsLayer') {
    return dnsLayer(x, { dilations: c.params.dilations!, epsilon: c.params.epsilon! });
  }
  return c.op === 'blurPool' ? blurPool(x) : upsampleLinear2x(x);
}

describe.each(BACKENDS)('MASR-Net blocks on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });

  for (const c of cases) {
    it(`${c.name}: values and gradient match the PyTorch/numpy reference`, () => {
      const x = tensorOf(c.x);
      const dy = tensorOf(c.dy);
      const out = run(c, x);
      expectClose(out, c.out, 1e-5, 1e-5);
      const dx = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(run(c, t), dy)))(x);
      expectClose(dx, c.dx, 1e-4, 1e-4);
      tf.dispose([x, dy, out, dx]);
    });
  }

  it('DNS pairs: 12 in 3D, 4 in 2D, each at distance √2 · dilation', () => {
    for (const [nd, n] of [
      [3, 12],
      [2, 4],
    ] as const) {
      const pairs = dnsPairs(nd, 2);
      expect(pairs).toHaveLength(n);
      for (const [p, q] of pairs) {
        expect(p.reduce((s, v, k) => s + (v - q[k]!) ** 2, 0)).toBe(8);
      }
    }
  });

  it('MASR-Net maps any size to unit-norm features; memory is flat', () => {
    const net = createMasrNet({ ndim: 2, seed: 1 });
    const x = tf.randomUniform([1, 21, 30, 1], 0, 1, 'float32', 5);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 2; i++) {
      const d = net.apply(x);
      expect(d.shape).toEqual([1, 21, 30, 24]);
      const norms = tf.tidy(() => tf.norm(d, 'euclidean', -1));
      const v = norms.dataSync();
      for (const n of v) expect(n).toBeCloseTo(1, 4);
      tf.dispose([d, norms]);
      expect(tf.memory().numTensors).toBe(before);
    }
    const net3 = createMasrNet({
      ndim: 3,
      featureChannels: 8,
      widths: [4, 4, 4, 4],
      hiddenChannels: 3,
    });
    const x3 = tf.randomUniform([1, 9, 8, 10, 1], 0, 1, 'float32', 6);
    const d3 = net3.apply(x3);
    expect(d3.shape).toEqual([1, 9, 8, 10, 8]);
    expect(net3.relations).toBe(24);
    tf.dispose([x, x3, d3]);
    net.dispose();
    net3.dispose();
  });

  it('MASR-Net is differentiable in its weights (every weight gets a gradient)', () => {
    const net = createMasrNet({ ndim: 2, widths: [4, 4, 4, 4], hiddenChannels: 3, seed: 2 });
    const x = tf.randomUniform([1, 16, 16, 1], 0, 1, 'float32', 7);
    const target = tf.randomNormal([1, 16, 16, 24], 0, 1, 'float32', 8);
    const vars = net.namedVariables().map(([, v]) => v);
    const { value, grads } = tf.variableGrads(
      () => tf.sum(tf.mul(net.apply(x), target)) as tf.Scalar,
      vars,
    );
    for (const v of vars) {
      const g = grads[v.name]!;
      expect(tf.tidy(() => tf.sum(tf.abs(g)).dataSync()[0]!)).toBeGreaterThan(0);
    }
    tf.dispose([x, target, value, ...Object.values(grads)]);
    net.dispose();
  });

  it('bad input names the function and the shape', () => {
    const net = createMasrNet({ ndim: 2 });
    const x = tf.zeros([1, 8, 8, 2]);
    expect(() => net.apply(x)).toThrow(/MasrNet\.apply.*\[B, H, W, 1\].*\[1, 8, 8, 2\]/);
    expect(() => createMasrNet({ ndim: 2, widths: [4, 4] })).toThrow(/createMasrNet.*'widths'/);
    expect(() => blurPool(tf.zeros([1, 1, 8, 1]))).toThrow(/blurPool.*≥ 2/);
    x.dispose();
    net.dispose();
  });
});
