/**
 * Exact inverses with random weights (every layer randomised, none left at zero):
 * inverse(forward(x)) = x and forward(inverse(z)) = z to 1e-5 for coupling blocks (dense and
 * DDWConv subnets, with and without the 1×1 convolution, odd splits), the 1×1 convolution,
 * the squeeze, sequences and translators, in 2D and 3D, batch 1 and 2; the inverse's
 * log-determinant is minus the forward one. Also the identity at initialisation.
 */
import { tf } from '@regkit/core';
import {
  AffineCouplingBlock,
  createInvertibleTranslator,
  DdwDenseBlock,
  DenseBlock,
  ddwDenseBlockSubnet,
  denseBlockSubnet,
  InvertibleConv1x1,
  type InvertibleModule,
  InvertibleSequence,
  InvertibleSqueeze,
  squeeze,
  unsqueeze,
} from '@regkit/inn';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, maxAbsDiff, randomizeWeights, uniform, useBackend } from './helpers.js';

const small = { growth: 4 };
const smallDdw = { growth: 4, attention: { kernelSize: 3, bases: 3 } };

/** Checks both round trips and the log-determinants of `m` at x ∈ U(−1, 1)^shape. */
function roundTrip(m: InvertibleModule, shape: number[], seed: number, tol = 1e-5): void {
  tf.tidy(() => {
    const x = uniform(shape, -1, 1, seed);
    const fwd = m.forward(x);
    expect(fwd.output.shape).toEqual(x.shape);
    expect(fwd.logDeterminant.shape).toEqual([shape[0]]);
    // non-trivial: the map moves x
    expect(maxAbsDiff(fwd.output, x)).toBeGreaterThan(1e-2);
    const back = m.inverse(fwd.output);
    const err = maxAbsDiff(back.output, x);
    expect(err, `inverse(forward(x)) error ${err}`).toBeLessThanOrEqual(tol);
    expect(maxAbsDiff(back.logDeterminant, tf.neg(fwd.logDeterminant))).toBeLessThanOrEqual(1e-4);
    const z = uniform(shape, -1, 1, seed + 1);
    const err2 = maxAbsDiff(m.forward(m.inverse(z).output).output, z);
    expect(err2, `forward(inverse(z)) error ${err2}`).toBeLessThanOrEqual(tol);
  });
}

describe.each(BACKENDS)('exact inverses on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });

  const couplings: Array<
    [string, 2 | 3, number[], ConstructorParameters<typeof AffineCouplingBlock>[2]]
  > = [
    [
      '2D dense, split 1 of 3, batch 2',
      2,
      [2, 8, 6, 3],
      { split: 1, subnet: denseBlockSubnet(small) },
    ],
    [
      '2D DDWConv, split 2 of 4, batch 2',
      2,
      [2, 6, 8, 4],
      { subnet: ddwDenseBlockSubnet(smallDdw) },
    ],
    [
      '2D dense, no 1×1 convolution',
      2,
      [1, 6, 6, 2],
      { subnet: denseBlockSubnet(small), invertibleConv: false },
    ],
    [
      '3D dense, split 3 of 5, batch 2',
      3,
      [2, 4, 4, 3, 5],
      { split: 3, subnet: denseBlockSubnet(small) },
    ],
    ['3D DDWConv, batch 2', 3, [2, 4, 3, 4, 4], { subnet: ddwDenseBlockSubnet(smallDdw) }],
    [
      '2D DDWConv direct (official kernel generator)',
      2,
      [2, 6, 6, 2],
      { subnet: ddwDenseBlockSubnet({ growth: 4, attention: { kernelSize: 5, mode: 'direct' } }) },
    ],
  ];
  for (const [name, nd, shape, options] of couplings) {
    it(`AffineCouplingBlock ${name} ${JSON.stringify(shape)}`, () => {
      const block = new AffineCouplingBlock(nd, shape.at(-1)!, { ...options, seed: 3 });
      randomizeWeights(block, 5);
      roundTrip(block, shape, 11);
      block.dispose();
    });
  }

  it('InvertibleConv1x1 2D and 3D: W⁻¹W = I, round trips', () => {
    for (const [shape, c] of [
      [[2, 5, 4, 6], 6],
      [[1, 3, 4, 2, 9], 9],
    ] as Array<[number[], number]>) {
      const conv = new InvertibleConv1x1(c, { seed: c });
      randomizeWeights(conv, c);
      tf.tidy(() => {
        const eye = tf.matMul(conv.inverseWeight(), conv.weight());
        expect(maxAbsDiff(eye, tf.eye(c))).toBeLessThan(1e-5);
      });
      roundTrip(conv, shape, 2);
      conv.dispose();
    }
  });

  it('squeeze/unsqueeze are inverse permutations (2D, 3D, factors 2 and 3)', () => {
    tf.tidy(() => {
      for (const [shape, f] of [
        [[2, 4, 6, 3], 2],
        [[1, 6, 3, 2], 3],
        [[2, 2, 4, 6, 1], 2],
      ] as Array<[number[], number]>) {
        const x = uniform(shape, -1, 1, 1);
        const y = squeeze(x, f);
        const nd = shape.length - 2;
        expect(y.shape).toEqual([
          shape[0],
          ...shape.slice(1, -1).map((n) => n / f),
          shape.at(-1)! * f ** nd,
        ]);
        expect(maxAbsDiff(unsqueeze(y, f), x)).toBe(0);
        // a permutation: same multiset of values
        const sorted = (t: tf.Tensor) => Array.from(t.dataSync()).sort((a, b) => a - b);
        expect(sorted(y)).toEqual(sorted(x));
      }
      const m = new InvertibleSqueeze(2);
      const x = uniform([2, 4, 4, 1], -1, 1, 3);
      const r = m.forward(x);
      expect(Array.from(r.logDeterminant.dataSync())).toEqual([0, 0]);
      expect(maxAbsDiff(m.inverse(r.output).output, x)).toBe(0);
    });
  });

  it('InvertibleSequence: summed log-determinants, reversed inverse (2D, batch 2)', () => {
    const blocks = [0, 1, 2].map(
      (i) => new AffineCouplingBlock(2, 4, { subnet: denseBlockSubnet(small), seed: i }),
    );
    const seq = new InvertibleSequence(blocks);
    randomizeWeights(seq, 9);
    roundTrip(seq, [2, 6, 6, 4], 4);
    tf.tidy(() => {
      const x = uniform([2, 6, 6, 4], -1, 1, 8);
      let z = x;
      let sum: tf.Tensor = tf.zeros([2]);
      for (const b of blocks) {
        const r = b.forward(z);
        z = r.output;
        sum = tf.add(sum, r.logDeterminant);
      }
      const all = seq.forward(x);
      expect(maxAbsDiff(all.output, z)).toBeLessThan(1e-6);
      expect(maxAbsDiff(all.logDeterminant, sum)).toBeLessThan(1e-4);
    });
    expect(seq.namedVariables()[0]![0]).toBe('block0/invconv/permutation');
    seq.dispose();
  });

  it('translator 2D: 1 channel lifted by a squeeze, 8 DDWConv blocks, batch 2', () => {
    const t = createInvertibleTranslator({
      ndim: 2,
      channels: 1,
      subnet: ddwDenseBlockSubnet({ growth: 4, attention: { kernelSize: 5 } }),
    });
    expect(t.couplings.length).toBe(8);
    expect(t.lift).toBe('squeeze');
    randomizeWeights(t, 2);
    roundTrip(t, [2, 8, 6, 1], 5);
    tf.tidy(() => {
      const x = uniform([2, 8, 6, 1], 0, 1, 6);
      expect(maxAbsDiff(t.translateBack(t.translate(x)), x)).toBeLessThanOrEqual(1e-5);
    });
    t.dispose();
  });

  it('translator 3D: 1 channel lifted by a squeeze (8 channels), 2 dense blocks', () => {
    const t = createInvertibleTranslator({
      ndim: 3,
      channels: 1,
      blocks: 2,
      subnet: denseBlockSubnet(small),
    });
    randomizeWeights(t, 3);
    roundTrip(t, [1, 4, 6, 4, 1], 7);
    t.dispose();
  });

  it("translator 2D with 2 channels and lift 'none' (the official [x, x] input)", () => {
    const t = createInvertibleTranslator({ ndim: 2, channels: 2, blocks: 2, subnet: 'dense' });
    expect(t.lift).toBe('none');
    randomizeWeights(t, 4);
    roundTrip(t, [2, 5, 7, 2], 8);
    t.dispose();
  });

  it('default subnets start at zero: the coupling is the identity, log-determinant 0', () => {
    tf.tidy(() => {
      const x = uniform([2, 5, 5, 3], -1, 1, 1);
      const dense = new DenseBlock(2, 3, 2);
      const ddw = new DdwDenseBlock(3, 1, 2, { growth: 4 });
      expect(tf.max(tf.abs(dense.apply(x))).dataSync()[0]).toBe(0);
      expect(tf.max(tf.abs(ddw.apply(uniform([1, 3, 3, 3, 1], -1, 1, 2)))).dataSync()[0]).toBe(0);
      const block = new AffineCouplingBlock(2, 3, { invertibleConv: false, subnet: 'ddw' });
      const r = block.forward(x);
      expect(maxAbsDiff(r.output, x)).toBe(0);
      expect(Array.from(r.logDeterminant.dataSync())).toEqual([0, 0]);
      for (const m of [dense, ddw, block]) m.dispose();
    });
  });
});
