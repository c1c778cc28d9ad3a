/**
 * The WebAssembly Parzen joint histogram and its gradient (`RegkitParzenJoint`,
 * `RegkitParzenJointGrad`) through the mutual information losses: against PyTorch (losses'
 * fixtures: a port of MONAI's GlobalMutualInformationLoss, autograd) at the tolerances of
 * the tfjs-op path, against that path (MI, NMI, local MI, barrier NMI; batches, channels,
 * clamped intensity ranges, bins and σ), and against finite differences.
 */
import { readFileSync } from 'node:fs';
import { RegkitParzenJoint, RegkitParzenJointGrad, tf } from '@regkit/core';
import { kernelMemoryBytes, parzenJointKernelFunc } from '@regkit/kernels';
import {
  barrierNmiLoss,
  localMutualInformationLoss,
  type MutualInformationOptions,
  mutualInformationLoss,
  normalizedMutualInformationLoss,
} from '@regkit/losses';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  BACKENDS,
  type FixtureCase,
  maxDiff,
  tensorOf,
  useKernels,
  withPortableOps,
} from './helpers.js';

const CASES = (
  JSON.parse(
    readFileSync(new URL('../../losses/test/fixtures/mi_fixtures.json', import.meta.url), 'utf8'),
  ) as { cases: FixtureCase[] }
).cases;

/** max |x − y| ≤ atol + rtol |y|, elementwise (the losses tests' expectClose). */
function expectClose(
  x: tf.Tensor,
  y: tf.Tensor | { shape: number[]; data: number[] },
  atol: number,
  rtol: number,
  what: string,
): void {
  const ref = y instanceof tf.Tensor ? Array.from(y.dataSync()) : y.data;
  const got = x.dataSync();
  expect(got.length, what).toBe(ref.length);
  ref.forEach((e, i) => {
    expect(Math.abs(got[i]! - e), `${what}[${i}]: ${got[i]} vs ${e}`).toBeLessThanOrEqual(
      atol + rtol * Math.abs(e),
    );
  });
}

type Loss = (a: tf.Tensor, b: tf.Tensor) => tf.Scalar;

/** Value and gradients of `f` at (a, b). */
function withGrads(f: Loss, a: tf.Tensor, b: tf.Tensor): [tf.Tensor, tf.Tensor, tf.Tensor] {
  const { value, grads } = tf.valueAndGrads(f)([a, b]);
  return [value, grads[0]!, grads[1]!];
}

describe.each(BACKENDS)('Parzen histogram kernel on %s', (backend) => {
  beforeAll(() => useKernels(backend));

  it('the MI losses run the WebAssembly kernels (forward and backward)', async () => {
    expect(tf.getKernel(RegkitParzenJoint, backend)?.kernelFunc).toBe(parzenJointKernelFunc);
    const a = tf.randomUniform([1, 6, 7, 1], 0, 1, 'float32', 1);
    const info = await tf.profile(() =>
      tf.grads((x: tf.Tensor, y: tf.Tensor) => mutualInformationLoss(x, y))([a, a]),
    );
    expect(info.kernelNames).toContain(RegkitParzenJoint);
    expect(info.kernelNames).toContain(RegkitParzenJointGrad);
    // σ above 3.5 bins: tfjs ops
    const wide = await tf.profile(() => mutualInformationLoss(a, a, { sigmaRatio: 4 }));
    expect(wide.kernelNames).not.toContain(RegkitParzenJoint);
    a.dispose();
  });

  it('has the PyTorch cases', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(8);
  });

  it.each(CASES)('$name matches PyTorch (as the tfjs-op path)', (c) => {
    tf.tidy(() => {
      const opts: MutualInformationOptions = {
        ...(c.params.bins ? { bins: c.params.bins as number } : {}),
        ...(c.params.sigmaRatio ? { sigmaRatio: c.params.sigmaRatio as number } : {}),
        ...(c.params.range ? { intensityRange: c.params.range as [number, number] } : {}),
      };
      const mi = c.op === 'mutualInformationLoss';
      const f: Loss = mi
        ? (x, y) => mutualInformationLoss(x, y, opts)
        : (x, y) => tf.neg(normalizedMutualInformationLoss(x, y, opts)) as tf.Scalar;
      const [value, dA, dB] = withGrads(f, tensorOf(c.inputs.a!), tensorOf(c.inputs.b!));
      expectClose(value, c.outputs[mi ? 'loss' : 'nmi']!, 1e-4, 1e-4, 'value');
      expectClose(dA, c.outputs.dA!, 1e-6, 1e-3, 'dA');
      expectClose(dB, c.outputs.dB!, 1e-6, 1e-3, 'dB');
    });
  });

  const losses: Array<[string, Loss]> = [
    [
      'MI, 32 bins, σ 1, range [0.1, 0.8]',
      (a, b) =>
        mutualInformationLoss(a, b, { bins: 32, sigmaRatio: 1, intensityRange: [0.1, 0.8] }),
    ],
    ['MI, 8 bins, σ 0.3', (a, b) => mutualInformationLoss(a, b, { bins: 8, sigmaRatio: 0.3 })],
    ['NMI, 23 bins', (a, b) => normalizedMutualInformationLoss(a, b)],
    ['local MI, patches of 4', (a, b) => localMutualInformationLoss(a, b, { patchSize: 4 })],
    ['barrier NMI (paper)', (a, b) => barrierNmiLoss(a, b, { bound: 20 })],
  ];

  it.each(losses)('%s matches the tfjs ops (B 2, C 2, 3D)', (_, f) => {
    tf.tidy(() => {
      const a = tf.randomUniform([2, 8, 9, 7, 2], -0.1, 1.1, 'float32', 2);
      const b = tf.add(tf.mul(tf.square(a), 0.7), tf.randomUniform(a.shape, 0, 0.3, 'float32', 3));
      const fast = withGrads(f, a, b);
      const ref = withPortableOps(() => withGrads(f, a, b));
      expect(Math.abs(fast[0].dataSync()[0]! - ref[0].dataSync()[0]!)).toBeLessThanOrEqual(1e-5);
      const scale = Math.max(...Array.from(ref[1].dataSync()).map(Math.abs));
      expect(maxDiff(fast[1], ref[1]) / scale, 'da').toBeLessThanOrEqual(1e-3);
      expect(maxDiff(fast[2], ref[2]) / scale, 'db').toBeLessThanOrEqual(1e-3);
    });
  });

  it('the gradient matches central finite differences', () => {
    tf.tidy(() => {
      const a = tf.randomUniform([1, 12, 13, 1], 0, 1, 'float32', 6);
      const b = tf.sqrt(tf.randomUniform([1, 12, 13, 1], 0, 1, 'float32', 7));
      const f: Loss = (x, y) => mutualInformationLoss(x, y, { bins: 12, sigmaRatio: 1 });
      const [, dA, dB] = withGrads(f, a, b);
      [a, b].forEach((x, i) => {
        const d = tf.randomUniform(x.shape, -1, 1, 'float32', 10 + i);
        const analytic = tf.sum(tf.mul(i === 0 ? dA : dB, d)).dataSync()[0]!;
        const at = (s: number) => {
          const y = tf.add(x, tf.mul(d, s));
          return (i === 0 ? f(y, b) : f(a, y)).dataSync()[0]!;
        };
        const eps = 1e-2;
        const numeric = (at(eps) - at(-eps)) / (2 * eps);
        expect(Math.abs(analytic - numeric)).toBeLessThanOrEqual(1e-4 + 2e-2 * Math.abs(numeric));
      });
    });
  });

  it('100 forward + backward calls keep numTensors and the kernel memory flat', () => {
    const a = tf.randomUniform([1, 10, 9, 8, 1], 0, 1, 'float32', 8);
    const b = tf.randomUniform([1, 10, 9, 8, 1], 0, 1, 'float32', 9);
    const step = () =>
      tf.dispose(tf.grads((x: tf.Tensor, y: tf.Tensor) => mutualInformationLoss(x, y))([a, b]));
    step();
    const tensors = tf.memory().numTensors;
    const bytes = kernelMemoryBytes();
    for (let i = 0; i < 100; i++) step();
    expect(tf.memory().numTensors).toBe(tensors);
    expect(kernelMemoryBytes()).toBe(bytes);
    tf.dispose([a, b]);
  });
});
