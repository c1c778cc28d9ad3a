import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tf } from '@regkit/core';
import {
  blurPool,
  createMasrNet,
  dnsLayer,
  dnsPairs,
  TrainingDivergedError,
  trainMasrNet,
  upsampleLinear2x,
} from '@regkit/networks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

/** A smooth random 2D "anatomy" in [0, 1] with a zero background ring (foreground > 0). */
function blobImage(seed: number, size = 24): tf.Tensor {
  return tf.tidy(() => {
    const noise = tf.randomUniform([1, size / 4, size / 4, 1], 0, 1, 'float32', seed);
    const up = tf.image.resizeBilinear(noise as tf.Tensor4D, [size - 8, size - 8], true);
    return tf.pad(up, [
      [0, 0],
      [4, 4],
      [4, 4],
      [0, 0],
    ]);
  });
}

describe('trainMasrNet', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'regkit-masr-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  beforeAll(async () => {
    await useBackend('wasm');
  });
  const small = { ndim: 2 as const, widths: [4, 8, 8, 8], hiddenChannels: 4, featureChannels: 8 };

  it('lowers the contrastive loss of two Bézier views and keeps tf.memory flat', async () => {
    const model = createMasrNet({ ...small, seed: 3 });
    const counts: number[] = [];
    const result = await trainMasrNet({
      model,
      epochs: 8,
      stepsPerEpoch: 5,
      samples: 128,
      learningRate: 3e-3,
      data: (e, s) => blobImage(100 + ((e * 5 + s) % 4)),
      onProgress: (p) => {
        if (p.step === p.stepsPerEpoch - 1) counts.push(tf.memory().numTensors);
      },
    });
    expect(result.history).toHaveLength(8);
    expect(new Set(counts.slice(1)).size).toBe(1);
    const first = result.history[0]!;
    const last = result.history[result.history.length - 1]!;
    // ln(128) ≈ 4.85 is chance level for 128 samples
    expect(first).toBeGreaterThan(3);
    expect(last).toBeLessThan(first - 1);
    model.dispose();
  });

  it('resumes from a checkpoint with the weights of an uninterrupted run', async () => {
    const run = async (epochs: number, dir: string) => {
      const model = createMasrNet({ ...small, seed: 4 });
      await trainMasrNet({
        model,
        epochs,
        stepsPerEpoch: 2,
        samples: 64,
        learningRate: 1e-3,
        checkpointDir: dir,
        data: (e, s) => blobImage(200 + e * 2 + s),
      });
      const w = model.getWeights();
      const out = Object.fromEntries(
        Object.entries(w).map(([k, v]) => [k, Array.from(v.dataSync())]),
      );
      tf.dispose(Object.values(w));
      model.dispose();
      return out;
    };
    const straight = await run(4, join(tmp, 'a'));
    await run(2, join(tmp, 'b'));
    const resumed = await run(4, join(tmp, 'b'));
    expect(resumed).toEqual(straight);
  });

  it('stops on a NaN loss with TrainingDivergedError; explains bad options', async () => {
    const model = createMasrNet({ ...small, seed: 5 });
    await expect(
      trainMasrNet({
        model,
        epochs: 1,
        samples: 32,
        data: () =>
          tf.tidy(() =>
            tf.where(
              tf.greater(blobImage(7), 0.9),
              tf.fill([1, 24, 24, 1], Number.NaN),
              blobImage(7),
            ),
          ),
      }),
    ).rejects.toThrow(TrainingDivergedError);
    for (const v of model.namedVariables()) {
      expect(tf.tidy(() => tf.all(tf.isFinite(v[1])).dataSync()[0])).toBe(1);
    }
    await expect(
      trainMasrNet({ model: {} as never, epochs: 1, data: () => blobImage(1) }),
    ).rejects.toThrow(/trainMasrNet.*'model' must be a MasrNet/);
    model.dispose();
  });
});
