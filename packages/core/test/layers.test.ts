import { readFileSync } from 'node:fs';
import {
  avgPool,
  Conv,
  Dense,
  GroupNorm,
  initialWeight,
  isInitialKernel,
  Module,
  maxPool,
  replaceKernel,
  tf,
  upsampleNearest,
} from '@regkit/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKEND_PATHS, expectClose, type FixtureCase, tensorOf, useBackend } from './helpers.js';

const cases = (
  JSON.parse(readFileSync(new URL('./fixtures/layer_fixtures.json', import.meta.url), 'utf8')) as {
    cases: FixtureCase[];
  }
).cases;

/** Output and gradients of sum(y ⊙ r) w.r.t. x and the given variables. */
function outputAndGrads(
  fn: (x: tf.Tensor) => tf.Tensor,
  x: tf.Tensor,
  r: tf.Tensor,
  vars: tf.Variable[],
): { y: tf.Tensor; dx: tf.Tensor; dvars: tf.Tensor[] } {
  const y = fn(x);
  const dx = tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(fn(xx), r)))(x);
  if (vars.length === 0) return { y, dx, dvars: [] };
  const { grads } = tf.variableGrads(() => tf.sum(tf.mul(fn(x), r)) as tf.Scalar, vars);
  return { y, dx, dvars: vars.map((v) => grads[v.name]!) };
}

describe.each(BACKEND_PATHS)('layers against PyTorch on %s (%s ops)', (backend, path) => {
  beforeAll(async () => {
    await useBackend(backend, path);
  });

  for (const c of cases) {
    it(c.name, () => {
      tf.tidy(() => {
        const x = tensorOf(c.inputs.x!);
        const r = tensorOf(c.inputs.r!);
        const p = c.params as Record<string, number | string | boolean>;
        if (c.op === 'conv') {
          const conv = new Conv(p.ndim as 2 | 3, p.inChannels as number, p.outChannels as number, {
            kernelSize: p.kernelSize as number,
            stride: p.stride as number,
            padding: p.padding as 'same' | 'valid' | number,
            dilation: p.dilation as number,
            bias: p.bias as boolean,
          });
          const weights: Record<string, tf.Tensor> = { kernel: tensorOf(c.inputs.kernel!) };
          if (c.inputs.bias) weights.bias = tensorOf(c.inputs.bias);
          conv.setWeights(weights);
          const vars = conv.bias ? [conv.kernel, conv.bias] : [conv.kernel];
          const { y, dx, dvars } = outputAndGrads((t) => conv.apply(t), x, r, vars);
          expectClose(y, c.outputs.y!, 1e-4);
          expectClose(dx, c.outputs.dx!, 1e-4);
          expectClose(dvars[0]!, c.outputs.dkernel!, 2e-4);
          if (conv.bias) expectClose(dvars[1]!, c.outputs.dbias!, 2e-4);
          conv.dispose();
        } else if (c.op === 'groupnorm') {
          const gn = new GroupNorm(p.groups as number, p.channels as number);
          gn.setWeights({ gamma: tensorOf(c.inputs.gamma!), beta: tensorOf(c.inputs.beta!) });
          const { y, dx, dvars } = outputAndGrads((t) => gn.apply(t), x, r, [gn.gamma, gn.beta]);
          expectClose(y, c.outputs.y!, 1e-4);
          expectClose(dx, c.outputs.dx!, 1e-4);
          expectClose(dvars[0]!, c.outputs.dgamma!, 2e-4);
          expectClose(dvars[1]!, c.outputs.dbeta!, 2e-4);
          gn.dispose();
        } else if (c.op === 'dense') {
          const dense = new Dense(p.inFeatures as number, p.outFeatures as number);
          dense.setWeights({ weight: tensorOf(c.inputs.weight!), bias: tensorOf(c.inputs.bias!) });
          const { y, dx, dvars } = outputAndGrads((t) => dense.apply(t), x, r, [
            dense.weight,
            dense.bias!,
          ]);
          expectClose(y, c.outputs.y!, 1e-4);
          expectClose(dx, c.outputs.dx!, 1e-4);
          expectClose(dvars[0]!, c.outputs.dweight!, 2e-4);
          expectClose(dvars[1]!, c.outputs.dbias!, 2e-4);
          dense.dispose();
        } else {
          const fn =
            c.op === 'upsample'
              ? (t: tf.Tensor) => upsampleNearest(t, p.factor as number)
              : c.op === 'maxpool'
                ? (t: tf.Tensor) => maxPool(t, p.size as number)
                : (t: tf.Tensor) => avgPool(t, p.size as number);
          const { y, dx } = outputAndGrads(fn, x, r, []);
          expectClose(y, c.outputs.y!, 1e-5);
          expectClose(dx, c.outputs.dx!, 1e-5);
        }
      });
    });
  }
});

class Pair extends Module {
  readonly a = this.addModule('a', new Conv(2, 1, 2, { seed: 1 }));
  readonly b = this.addModule('b', new Dense(2, 3, { init: 'glorotUniform', seed: 2 }));
  readonly s = this.addWeight('scale', tf.ones([1]), false);
}

describe('Conv filter gradient: computed as a convolution unless the kernel was replaced', () => {
  it.each(['cpu', 'wasm'])('%s', async (backend) => {
    await useBackend(backend as 'cpu' | 'wasm', 'kernel');
    const c = cases.find(
      (k) =>
        k.op === 'conv' && k.params.ndim === 2 && k.params.stride === 1 && k.params.dilation === 1,
    )!;
    const p = c.params as Record<string, number | string | boolean>;
    const dkernel = () =>
      tf.tidy(() => {
        const conv = new Conv(2, p.inChannels as number, p.outChannels as number, {
          kernelSize: p.kernelSize as number,
          padding: p.padding as 'same' | 'valid' | number,
          bias: false,
        });
        conv.setWeights({ kernel: tensorOf(c.inputs.kernel!) });
        const x = tensorOf(c.inputs.x!);
        const r = tensorOf(c.inputs.r!);
        const out = tf.variableGrads(
          () => tf.sum(tf.mul(conv.apply(x), r)) as tf.Scalar,
          [conv.kernel],
        ).grads[conv.kernel.name]!;
        const copy = out.clone();
        conv.dispose();
        return copy;
      });
    expect(isInitialKernel('Conv2DBackpropFilter', backend)).toBe(true);
    const viaConv = dkernel();
    expectClose(viaConv, c.outputs.dkernel!, 2e-4);
    const original = tf.getKernel('Conv2DBackpropFilter', backend)!;
    let calls = 0;
    replaceKernel({
      ...original,
      kernelFunc: (args) => {
        calls++;
        return original.kernelFunc(args);
      },
    });
    try {
      expect(isInitialKernel('Conv2DBackpropFilter', backend)).toBe(false);
      const viaKernel = dkernel();
      expect(calls).toBeGreaterThan(0);
      expectClose(viaKernel, c.outputs.dkernel!, 2e-4);
      tf.dispose(viaKernel);
    } finally {
      replaceKernel(original);
    }
    expect(isInitialKernel('Conv2DBackpropFilter', backend)).toBe(true);
    tf.dispose(viaConv);
  });
});

describe('Module', () => {
  beforeAll(async () => {
    await useBackend('cpu', 'kernel');
  });

  it('lists weights by path, trainable ones for optimisers, and counts parameters', () => {
    const m = new Pair();
    expect(m.namedVariables().map(([p]) => p)).toEqual([
      'scale',
      'a/kernel',
      'a/bias',
      'b/weight',
      'b/bias',
    ]);
    expect(m.trainableVariables.length).toBe(4);
    expect(m.parameterCount).toBe(1 + 9 * 2 + 2 + 2 * 3 + 3);
    m.dispose();
  });

  it('round-trips weights and refuses wrong names and shapes', () => {
    const before = tf.memory().numTensors;
    const m = new Pair();
    const other = new Pair();
    const w = m.getWeights();
    tf.tidy(() => other.a.kernel.assign(tf.zerosLike(other.a.kernel)));
    other.setWeights(w);
    expect(other.a.kernel.arraySync()).toEqual(m.a.kernel.arraySync());
    expect(() => other.setWeights({ ...w, 'a/nope': tf.zeros([1]) })).toThrow(
      /unknown weight 'a\/nope'/,
    );
    const { 'b/bias': _dropped, ...partial } = w;
    expect(() => other.setWeights(partial)).toThrow(/'b\/bias' \[3\] is missing/);
    other.setWeights(partial, false);
    expect(() => other.setWeights({ ...w, 'b/bias': tf.zeros([4]) })).toThrow(
      /'b\/bias' must have shape \[3\], got \[4\]/,
    );
    for (const t of Object.values(w)) t.dispose();
    m.dispose();
    other.dispose();
    // the tensors made inside the expectations are the only leftovers
    expect(tf.memory().numTensors - before).toBeLessThanOrEqual(2);
  });

  it('two models with the same structure never collide in the variable registry', () => {
    const a = new Pair();
    const b = new Pair();
    expect(a.a.kernel.name).not.toBe(b.a.kernel.name);
    a.dispose();
    b.dispose();
  });

  it('seeded initial weights are reproducible and follow their distributions', () => {
    const t1 = initialWeight([64, 64], 'heNormal', 64, 64, 5);
    const t2 = initialWeight([64, 64], 'heNormal', 64, 64, 5);
    expect(t1.arraySync()).toEqual(t2.arraySync());
    const v = Array.from(t1.dataSync());
    const mean = v.reduce((a, b) => a + b, 0) / v.length;
    const std = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length);
    expect(Math.abs(mean)).toBeLessThan(0.01);
    expect(std).toBeCloseTo(Math.sqrt(2 / 64), 2);
    const u = Array.from(initialWeight([4000], 'torchDefault', 25, 1, 1).dataSync());
    expect(Math.max(...u)).toBeLessThanOrEqual(0.2);
    expect(Math.min(...u)).toBeGreaterThanOrEqual(-0.2);
    expect(Math.max(...u)).toBeGreaterThan(0.19);
    tf.dispose([t1, t2]);
  });

  it('explains bad input', () => {
    const conv = new Conv(3, 2, 4);
    expect(() => conv.apply(tf.zeros([1, 4, 4, 4, 3]))).toThrow(
      /Conv.apply\(\): 'x' must be \[B, D, H, W, 2\], got \[1, 4, 4, 4, 3\]/,
    );
    expect(() => new Conv(2, 0, 4)).toThrow(/'inChannels' must be a positive integer, got 0/);
    expect(() => new GroupNorm(3, 8)).toThrow(/positive divisor of 8 channels, got 3/);
    expect(() => upsampleNearest(tf.zeros([2, 3]))).toThrow(/must be \[B, H, W, C\]/);
    conv.dispose();
  });
});
