/**
 * tf.memory().numTensors stays flat over repeated training steps (forward, inverse, loss,
 * gradients, optimiser update) and is back to its start after dispose; parameter counts
 * against closed forms; the error messages for bad shapes and options.
 */
import { RegkitError, tf } from '@regkit/core';
import {
  AffineCouplingBlock,
  createInvertibleTranslator,
  DdwDenseBlock,
  DenseBlock,
  DynamicDepthwiseConv,
  ddwDenseBlockSubnet,
  denseBlockSubnet,
  depthwiseConvPerSample,
  InvertibleConv1x1,
  InvertibleSequence,
  squeeze,
  unsqueeze,
} from '@regkit/inn';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, randomizeWeights, uniform, useBackend } from './helpers.js';

describe.each(BACKENDS)('memory on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });

  it('numTensors is flat over training steps of a translator (forward + inverse + L1, 2D)', () => {
    const start = tf.memory().numTensors;
    const t = createInvertibleTranslator({
      ndim: 2,
      channels: 1,
      blocks: 2,
      subnet: ddwDenseBlockSubnet({ growth: 8 }),
      seed: 1,
    });
    const x = uniform([2, 8, 8, 1], 0, 1, 1);
    const y = uniform([2, 8, 8, 1], 0, 1, 2);
    const optimizer = tf.train.adam(1e-3);
    const counts: number[] = [];
    for (let i = 0; i < 4; i++) {
      const loss = optimizer.minimize(
        () => {
          const fake = t.translate(x);
          const recon = t.translateBack(fake);
          // INNReg's L1 terms: translation towards y and the cross-translation loss
          return tf.add(
            tf.mean(tf.abs(tf.sub(fake, y))),
            tf.mul(tf.mean(tf.abs(tf.sub(recon, x))), 0.1),
          );
        },
        true,
        t.trainableVariables,
      )!;
      expect(Number.isFinite(loss.dataSync()[0])).toBe(true);
      loss.dispose();
      counts.push(tf.memory().numTensors);
    }
    // the optimiser creates its slots in the first step
    expect(counts[3]).toBe(counts[1]);
    optimizer.dispose();
    t.dispose();
    tf.dispose([x, y]);
    expect(tf.memory().numTensors).toBe(start);
  });

  it('numTensors is flat over forward+backward of a 3D coupling block with DDWConv', () => {
    const start = tf.memory().numTensors;
    const block = new AffineCouplingBlock(3, 4, {
      subnet: ddwDenseBlockSubnet({ growth: 4, attention: { kernelSize: 3 } }),
      seed: 2,
    });
    const x = uniform([2, 4, 4, 4, 4], -1, 1, 3);
    const counts: number[] = [];
    for (let i = 0; i < 3; i++) {
      const { value, grads } = tf.variableGrads(() => {
        const o = block.forward(x);
        return tf.add(tf.mean(tf.square(o.output)), tf.mean(o.logDeterminant)) as tf.Scalar;
      }, block.trainableVariables);
      tf.dispose([value, ...Object.values(grads)]);
      const back = block.inverse(x);
      tf.dispose([back.output, back.logDeterminant]);
      counts.push(tf.memory().numTensors);
    }
    expect(counts[2]).toBe(counts[0]);
    block.dispose();
    x.dispose();
    expect(tf.memory().numTensors).toBe(start);
  });
});

describe.each(BACKENDS)('memory-saving gradients on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });

  for (const nd of [2, 3] as const) {
    it(`recomputeGradients: the gradients of plain back-propagation, less taped memory (${nd}D)`, () => {
      const start = tf.memory().numTensors;
      const make = (recomputeGradients: boolean) => {
        const t = createInvertibleTranslator({
          ndim: nd,
          channels: 1,
          blocks: 3,
          subnet: ddwDenseBlockSubnet({ growth: 4, attention: { kernelSize: 3 } }),
          recomputeGradients,
          seed: 5,
        });
        randomizeWeights(t, 6);
        return t;
      };
      const shape = nd === 2 ? [2, 8, 6, 1] : [1, 4, 6, 4, 1];
      const x = uniform(shape, 0, 1, 1);
      const results = [false, true].map((recompute) => {
        const t = make(recompute);
        let taped = 0;
        const counts: number[] = [];
        let out: { value: number; grads: tf.Tensor[] } = { value: 0, grads: [] };
        for (let i = 0; i < 3; i++) {
          tf.dispose(out.grads);
          const { value, grads } = tf.variableGrads(() => {
            // bytes the forward leaves alive for the backward (weights and input excluded)
            const before = tf.memory().numBytes;
            const fake = t.translate(x);
            const recon = t.translateBack(tf.mul(fake, 1.1));
            const loss = tf.add(tf.mean(tf.abs(fake)), tf.mean(tf.square(tf.sub(recon, x))));
            taped = tf.memory().numBytes - before;
            return loss as tf.Scalar;
          }, t.trainableVariables);
          out = {
            value: value.dataSync()[0]!,
            grads: t.trainableVariables.map((v) => grads[v.name]!),
          };
          value.dispose();
          counts.push(tf.memory().numTensors);
        }
        expect(counts[2]).toBe(counts[1]);
        return { t, taped, ...out };
      });
      const [plain, recomputed] = results as [(typeof results)[0], (typeof results)[0]];
      expect(recomputed.value).toBeCloseTo(plain.value, 6);
      plain.grads.forEach((g, i) => {
        const scale = Math.max(
          1e-3,
          tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0]!),
        );
        const err = tf.tidy(() => tf.max(tf.abs(tf.sub(g, recomputed.grads[i]!))).dataSync()[0]!);
        expect(err / scale, `weight ${i}`).toBeLessThan(1e-4);
      });
      // only the blocks' inputs and outputs stay taped (~2 % of plain back-propagation here)
      expect(recomputed.taped).toBeLessThan(plain.taped / 10);
      for (const r of results) {
        tf.dispose(r.grads);
        r.t.dispose();
      }
      x.dispose();
      expect(tf.memory().numTensors).toBe(start);
    });
  }
});

describe('parameter counts', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  const conv = (cin: number, cout: number, taps: number) => taps * cin * cout + cout;

  it('DenseBlock (growth 32) and DdwDenseBlock (k 7, K 4, reduction 4)', () => {
    const dense = new DenseBlock(2, 2, 2);
    const growth = [0, 1, 2, 3].reduce((n, i) => n + conv(2 + 32 * i, 32, 9), 0);
    expect(dense.parameterCount).toBe(growth + conv(130, 2, 9));
    const ddw = new DdwDenseBlock(3, 2, 2);
    const growth3 = [0, 1, 2, 3].reduce((n, i) => n + conv(2 + 32 * i, 32, 27), 0);
    const attention = 130 * 32 + (32 * 4 + 4) + 4 * 343 * 130 + 130;
    expect(ddw.parameterCount).toBe(growth3 + attention + conv(130, 2, 27));
    const direct = new DynamicDepthwiseConv(2, 8, { mode: 'direct', kernelSize: 7 });
    expect(direct.parameterCount).toBe(8 * 2 + (2 * 8 * 49 + 8 * 49) + 8);
    for (const m of [dense, ddw, direct]) m.dispose();
  });

  it('translator: 8 blocks of (1×1 convolution + 3 subnets)', () => {
    const t = createInvertibleTranslator({
      ndim: 2,
      channels: 1,
      subnet: denseBlockSubnet({ growth: 8 }),
    });
    const subnet = [0, 1, 2, 3].reduce((n, i) => n + conv(2 + 8 * i, 8, 9), 0) + conv(34, 2, 9);
    // invconv: permutation, lower, upper (4×4 each), logScale, sign (4 each)
    expect(t.parameterCount).toBe(8 * (3 * 16 + 2 * 4 + 3 * subnet));
    t.dispose();
  });
});

describe('errors', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  const err = (f: () => unknown, pattern: RegExp) => {
    expect(f).toThrow(RegkitError);
    expect(f).toThrow(pattern);
  };

  it('coupling blocks: bad splits, channel counts, ranks and subnets', () => {
    err(
      () => new AffineCouplingBlock(2, 4, { split: 4 }),
      /AffineCouplingBlock\(\): 'split' must be an integer in \[1, 3\].*got 4/,
    );
    err(
      () => new AffineCouplingBlock(2, 4, { split: 1.5 }),
      /'split' must be an integer in \[1, 3\]/,
    );
    err(() => new AffineCouplingBlock(2, 4, { split: 0 }), /'split'/);
    err(() => new AffineCouplingBlock(2, 1), /'channels' must be an integer ≥ 2, got 1/);
    err(() => new AffineCouplingBlock(4 as 2, 4), /'ndim' must be 2 or 3, got 4/);
    err(
      () => new AffineCouplingBlock(2, 4, { subnet: 'unet' as 'dense' }),
      /'subnet' must be one of 'dense', 'ddw'/,
    );
    err(() => new AffineCouplingBlock(2, 4, { clamp: 0 }), /'clamp' must be a positive number/);
    const block = new AffineCouplingBlock(2, 4, { subnet: denseBlockSubnet({ growth: 2 }) });
    err(
      () => block.forward(tf.zeros([1, 4, 4, 3])),
      /forward\(\): 'x' must be \[B, H, W, 4\] \(rank 4\), got \[1, 4, 4, 3\]/,
    );
    err(
      () => block.forward(tf.zeros([1, 4, 4, 4, 4])),
      /must be \[B, H, W, 4\] \(rank 4\), got \[1, 4, 4, 4, 4\]/,
    );
    err(() => block.inverse(tf.zeros([4, 4])), /inverse\(\): 'z' must be \[B, H, W, 4\]/);
    err(() => block.forward('x' as unknown as tf.Tensor), /'x' must be a tf.Tensor, got string/);
    block.dispose();
    const bad = new AffineCouplingBlock(2, 4, {
      subnet: (cin, _cout, nd, seed) => new DenseBlock(nd, cin, 3, { growth: 2, seed }),
    });
    err(
      () => bad.forward(tf.zeros([1, 4, 4, 4])),
      /subnet F must map \[1, 4, 4, 2\] to \[1, 4, 4, 2\], got \[1, 4, 4, 3\]/,
    );
    bad.dispose();
  });

  it('translator: 1 channel without a lift, sizes not divisible by the squeeze, bad split', () => {
    err(
      () => createInvertibleTranslator({ ndim: 2, channels: 1, lift: 'none' }),
      /at least 2 channels; with 1 channel use lift 'squeeze'/,
    );
    err(
      () => createInvertibleTranslator({ ndim: 2, channels: 1, split: 4 }),
      /'split' must be an integer in \[1, 3\] for the 4 channels/,
    );
    err(
      () => createInvertibleTranslator({ ndim: 2, channels: 1, lift: 'pca' as 'none' }),
      /'lift' must be one of 'squeeze', 'none'/,
    );
    err(
      () => createInvertibleTranslator({ ndim: 2, channels: 0 }),
      /'channels' must be an integer ≥ 1, got 0/,
    );
    const t = createInvertibleTranslator({
      ndim: 2,
      channels: 1,
      blocks: 1,
      subnet: denseBlockSubnet({ growth: 2 }),
    });
    err(
      () => t.translate(tf.zeros([1, 5, 4, 1])),
      /spatial size of 'x' \[1, 5, 4, 1\] must be divisible by the squeeze factor 2/,
    );
    err(
      () => t.translateBack(tf.zeros([1, 4, 4, 2])),
      /'y' must be \[B, H, W, 1\] \(rank 4\), got \[1, 4, 4, 2\]/,
    );
    err(() => t.translate(tf.zeros([1, 4, 4, 4, 1])), /'x' must be \[B, H, W, 1\] \(rank 4\)/);
    t.dispose();
  });

  it('squeeze, 1×1 convolution, DDWConv, depthwise convolution and sequence', () => {
    err(
      () => squeeze(tf.zeros([1, 3, 4, 1])),
      /squeeze\(\): every spatial size of 'x' \[1, 3, 4, 1\] must be divisible by the factor 2/,
    );
    err(
      () => squeeze(tf.zeros([3, 4, 1])),
      /squeeze\(\): 'x' must be \[B, H, W, C\] or \[B, D, H, W, C\], got \[3, 4, 1\]/,
    );
    err(
      () => unsqueeze(tf.zeros([1, 3, 4, 6])),
      /channels of 'y' \[1, 3, 4, 6\] must be divisible by 2\^2/,
    );
    const inv = new InvertibleConv1x1(3);
    err(
      () => inv.forward(tf.zeros([1, 4, 4, 2])),
      /InvertibleConv1x1.forward\(\): 'x' must be \[B, H, W, 3\] or \[B, D, H, W, 3\], got \[1, 4, 4, 2\]/,
    );
    inv.dispose();
    err(() => new DynamicDepthwiseConv(2, 4, { kernelSize: 4 }), /'kernelSize' must be odd, got 4/);
    err(
      () => new DynamicDepthwiseConv(2, 4, { mode: 'static' as 'direct' }),
      /'mode' must be one of 'mixture', 'direct'/,
    );
    const ddw = new DynamicDepthwiseConv(3, 4, { kernelSize: 3 });
    err(
      () => ddw.apply(tf.zeros([1, 4, 4, 4])),
      /DynamicDepthwiseConv.apply\(\): 'x' must be \[B, D, H, W, 4\] \(rank 5\)/,
    );
    ddw.dispose();
    err(
      () => new DenseBlock(2, 2, 2, { kernelSize: 2 }),
      /DenseBlock\(\): 'kernelSize' must be odd, got 2/,
    );
    err(() => new DenseBlock(2, 0, 2), /'inChannels' must be an integer ≥ 1, got 0/);
    const dense = new DenseBlock(2, 2, 2, { growth: 2 });
    err(
      () => dense.apply(tf.zeros([1, 4, 4, 3])),
      /DenseBlock.apply\(\): 'x' must be \[B, H, W, 2\] \(rank 4\), got \[1, 4, 4, 3\]/,
    );
    dense.dispose();
    err(
      () => depthwiseConvPerSample(tf.zeros([2, 4, 4, 3]), tf.zeros([1, 3, 3, 3])),
      /'kernels' must be \[2, k, k, 3\] with one odd k, got \[1, 3, 3, 3\]/,
    );
    err(() => depthwiseConvPerSample(tf.zeros([1, 4, 4, 3]), tf.zeros([1, 2, 2, 3])), /one odd k/);
    err(
      () => depthwiseConvPerSample(tf.zeros([1, 4, 4, 3]), tf.zeros([1, 3, 3, 3]), tf.zeros([2])),
      /'bias' must be \[3\], got \[2\]/,
    );
    err(
      () => new InvertibleSequence([{} as never]),
      /'blocks' must be an array of InvertibleModule/,
    );
  });
});
