/**
 * Log-determinants against brute-force Jacobians, independent of the analytic formula and of
 * PyTorch: central finite differences of the forward map (all 2n perturbations in one batch)
 * and the Jacobian of the computation graph by reverse-mode autodiff, row by row; log|det|
 * by LU in float64. Gradients against central finite differences with
 * respect to inputs and weights, through forward, inverse and log-determinant; the per-sample
 * depthwise convolution's own gradient against tfjs's stock depthwise gradient.
 */
import { tf } from '@regkit/core';
import {
  AffineCouplingBlock,
  createInvertibleTranslator,
  type DynamicDepthwiseConv,
  ddwDenseBlockSubnet,
  denseBlockSubnet,
  depthwiseConvPerSample,
  InvertibleConv1x1,
  type InvertibleModule,
} from '@regkit/inn';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  autodiffLogDet,
  BACKENDS,
  bruteForceLogDet,
  checkGradient,
  checkWeightGradient,
  randomizeWeights,
  uniform,
  useBackend,
} from './helpers.js';

function variables(m: InvertibleModule | DynamicDepthwiseConv, paths: string[]): tf.Variable[] {
  const all = new Map(m.namedVariables());
  return paths.map((p) => {
    const v = all.get(p);
    expect(v, p).toBeDefined();
    return v!;
  });
}

describe.each(BACKENDS)('log-determinants and gradients on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });

  const tiny: Array<[string, () => InvertibleModule, number[]]> = [
    [
      'coupling 2D dense, split 1 of 3',
      () => new AffineCouplingBlock(2, 3, { split: 1, subnet: denseBlockSubnet({ growth: 3 }) }),
      [2, 3, 2, 3],
    ],
    [
      'coupling 3D DDWConv',
      () =>
        new AffineCouplingBlock(3, 2, {
          subnet: ddwDenseBlockSubnet({ growth: 2, attention: { kernelSize: 3, bases: 2 } }),
        }),
      [2, 2, 2, 3, 2],
    ],
    ['1×1 convolution 3D', () => new InvertibleConv1x1(3, { seed: 4 }), [2, 2, 2, 2, 3]],
    [
      'translator 2D (squeeze + 2 blocks)',
      () =>
        createInvertibleTranslator({
          ndim: 2,
          channels: 1,
          blocks: 2,
          subnet: denseBlockSubnet({ growth: 2 }),
        }),
      [2, 4, 4, 1],
    ],
  ];

  for (const [name, make, shape] of tiny) {
    it(`log|det ∂f/∂x| = brute-force Jacobian, ${name} ${JSON.stringify(shape)}`, () => {
      const m = make();
      randomizeWeights(m, 21);
      tf.tidy(() => {
        const x = uniform(shape, -1, 1, 3);
        const analytic = m.forward(x).logDeterminant.dataSync();
        const f = (t: tf.Tensor) => m.forward(t).output;
        for (let b = 0; b < shape[0]!; b++) {
          const item = tf.slice(x, [b], [1]);
          // finite differences (float32, ε = 3e-3: LeakyReLU kinks make larger steps noisy)
          const numeric = bruteForceLogDet(f, item, 3e-3);
          expect(
            Math.abs(analytic[b]! - numeric),
            `FD item ${b}: ${analytic[b]} vs ${numeric}`,
          ).toBeLessThan(2e-3 * Math.max(1, Math.abs(numeric)));
          const graph = autodiffLogDet(f, item);
          expect(
            Math.abs(analytic[b]! - graph),
            `autodiff item ${b}: ${analytic[b]} vs ${graph}`,
          ).toBeLessThan(1e-4 * Math.max(1, Math.abs(graph)));
        }
      });
      m.dispose();
    });
  }

  // LeakyReLU slope 1 in the finite-difference checks: with kinks, float32 central differences
  // disagree with the true derivative at every step size that rounding allows (the kinked
  // subnets' gradients are checked against PyTorch autograd in fixtures.test.ts)
  it('coupling 2D: gradients of forward output + log-det and of the inverse, input and weights', () => {
    const block = new AffineCouplingBlock(2, 4, {
      subnet: ddwDenseBlockSubnet({
        growth: 3,
        negativeSlope: 1,
        attention: { kernelSize: 3, bases: 2 },
      }),
    });
    randomizeWeights(block, 8);
    tf.tidy(() => {
      const x = uniform([2, 4, 3, 4], -1, 1, 1);
      const r = uniform([2, 4, 3, 4], -1, 1, 2);
      const q = tf.tensor1d([0.7, -0.4]);
      const forwardLoss = (t: tf.Tensor) =>
        tf.tidy(() => {
          const o = block.forward(t);
          return tf.add(
            tf.sum(tf.mul(o.output, r)),
            tf.sum(tf.mul(o.logDeterminant, q)),
          ) as tf.Scalar;
        });
      const inverseLoss = (t: tf.Tensor) =>
        tf.tidy(() => {
          const o = block.inverse(t);
          return tf.add(
            tf.sum(tf.mul(o.output, r)),
            tf.sum(tf.mul(o.logDeterminant, q)),
          ) as tf.Scalar;
        });
      checkGradient(forwardLoss, [x]);
      checkGradient(inverseLoss, [x]);
      const vars = variables(block, [
        'invconv/lower',
        'invconv/upper',
        'invconv/logScale',
        'F/conv1/kernel',
        'G/conv5/bias',
        'H/conv5/kernel',
        'H/attention/bases',
        'H/attention/reduce/weight',
        'F/attention/expand/weight',
      ]);
      checkWeightGradient(() => forwardLoss(x), vars);
      checkWeightGradient(() => inverseLoss(x), vars, { seed: 41 });
    });
    block.dispose();
  });

  it('coupling 3D dense: gradients with respect to input and weights', () => {
    const block = new AffineCouplingBlock(3, 3, {
      split: 2,
      subnet: denseBlockSubnet({ growth: 2, negativeSlope: 1 }),
    });
    randomizeWeights(block, 9);
    tf.tidy(() => {
      const x = uniform([1, 3, 2, 3, 3], -1, 1, 4);
      const r = uniform([1, 3, 2, 3, 3], -1, 1, 5);
      const loss = (t: tf.Tensor) =>
        tf.tidy(() => {
          const o = block.forward(t);
          return tf.add(tf.sum(tf.mul(o.output, r)), tf.sum(o.logDeterminant)) as tf.Scalar;
        });
      checkGradient(loss, [x]);
      checkWeightGradient(
        () => loss(x),
        variables(block, ['F/conv2/kernel', 'H/conv5/kernel', 'invconv/logScale']),
      );
    });
    block.dispose();
  });

  it('depthwiseConvPerSample: own gradients = stock tfjs gradients (2D and 3D, batch 2)', () => {
    tf.tidy(() => {
      for (const [shape, k] of [
        [[2, 6, 5, 3], 5],
        [[1, 9, 8, 3], 7], // on wasm: four 5×5 windows
        [[2, 7, 6, 2], 9],
        [[2, 3, 4, 5, 2], 3],
      ] as Array<[number[], number]>) {
        const nd = shape.length - 2;
        const x = uniform(shape, -1, 1, 1);
        const kernels = uniform([shape[0]!, ...new Array(nd).fill(k), shape.at(-1)!], -1, 1, 2);
        const bias = uniform([shape.at(-1)!], -1, 1, 3);
        const r = uniform(shape, -1, 1, 4);
        const ours = tf.grads((a: tf.Tensor, w: tf.Tensor, c: tf.Tensor) =>
          tf.sum(tf.mul(depthwiseConvPerSample(a, w, c), r)),
        )([x, kernels, bias]);
        // reference: per item, per channel, stock ops only (conv3d / depthwiseConv2d autodiff)
        const reference = (a: tf.Tensor, w: tf.Tensor, c: tf.Tensor) => {
          const items = [];
          for (let b = 0; b < shape[0]!; b++) {
            const xb = tf.slice(a, [b], [1]);
            const wb = tf.slice(w, [b], [1]);
            if (nd === 2) {
              const f = tf.reshape(wb, [k, k, shape.at(-1)!, 1]) as tf.Tensor4D;
              items.push(tf.depthwiseConv2d(xb as tf.Tensor4D, f, 1, 'same'));
            } else {
              const chans = [];
              for (let ch = 0; ch < shape.at(-1)!; ch++) {
                const xc = tf.slice(xb, [0, 0, 0, 0, ch], [-1, -1, -1, -1, 1]) as tf.Tensor5D;
                const wc = tf.reshape(tf.slice(wb, [0, 0, 0, 0, ch], [-1, -1, -1, -1, 1]), [
                  k,
                  k,
                  k,
                  1,
                  1,
                ]);
                chans.push(tf.conv3d(xc, wc as tf.Tensor5D, 1, 'same'));
              }
              items.push(tf.concat(chans, -1));
            }
          }
          return tf.add(tf.concat(items, 0), c);
        };
        const ref = tf.grads((a: tf.Tensor, w: tf.Tensor, c: tf.Tensor) =>
          tf.sum(tf.mul(reference(a, w, c), r)),
        )([x, kernels, bias]);
        const y = depthwiseConvPerSample(x, kernels, bias);
        expect(tf.max(tf.abs(tf.sub(y, reference(x, kernels, bias)))).dataSync()[0]).toBeLessThan(
          1e-5,
        );
        ours.forEach((g, i) => {
          const err = tf.max(tf.abs(tf.sub(g, ref[i]!))).dataSync()[0]!;
          expect(err, `${nd}D gradient ${i}`).toBeLessThan(1e-4);
        });
        checkGradient(
          (a, w) => tf.sum(tf.mul(depthwiseConvPerSample(a, w), r)) as tf.Scalar,
          [x, kernels],
        );
      }
    });
  });
});
