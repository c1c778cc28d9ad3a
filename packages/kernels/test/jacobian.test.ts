/**
 * The WebAssembly Jacobian determinant (`RegkitJacobianDet`, `RegkitJacobianDetGrad`, run by
 * core's `jacobianDeterminant`): against metrics' numpy fixtures
 * (packages/metrics/test/fixtures/make_jacobian_fixtures.py: numpy.gradient and
 * numpy.linalg.det in float64) at 1, 2 and 3 threads, against core's composite of tfjs ops
 * (forward and gradient, 2D and 3D, batches), against central finite differences of the
 * kernel's own forward, bit-identical at 1, 2 and 3 threads, memory flat over 1000 calls.
 */
import { readFileSync } from 'node:fs';
import {
  jacobianDeterminant,
  RegkitJacobianDet,
  RegkitJacobianDetGrad,
  randomSmoothField,
  tf,
} from '@regkit/core';
import {
  jacobianDetGradKernelFunc,
  jacobianDetKernelFunc,
  setKernelThreads,
} from '@regkit/kernels';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, expectMemoryFlat, maxDiff, useKernels, withPortableOps } from './helpers.js';

interface JacobianCase {
  name: string;
  shape: number[];
  field: number[];
  det: number[];
}
const CASES = (
  JSON.parse(
    readFileSync(
      new URL('../../metrics/test/fixtures/jacobian_fixtures.json', import.meta.url),
      'utf8',
    ),
  ) as { cases: JacobianCase[] }
).cases;

const THREADS = [1, 2, 3];

/** Bytes of a result, for exact comparisons. */
function bytes(t: tf.Tensor): Uint8Array {
  const v = t.dataSync() as Float32Array;
  return new Uint8Array(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength));
}

/** det and the gradient of sum(det · w) with respect to the field. */
function detWithGrad(u: tf.Tensor, w: tf.Tensor): [tf.Tensor, tf.Tensor] {
  const det = jacobianDeterminant(u);
  const du = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(jacobianDeterminant(x), w)))(u);
  return [det, du];
}

/** Smooth fields with folds (large displacements on a fine control grid), 2D and 3D, B = 2. */
function fields(): tf.Tensor[] {
  return [
    randomSmoothField([40, 44, 30], { maxDisplacement: 8, controlSpacing: 4, batch: 2, seed: 3 }),
    randomSmoothField([150, 170], { maxDisplacement: 4, controlSpacing: 5, batch: 2, seed: 4 }),
    randomSmoothField([2, 5, 3], { maxDisplacement: 1, controlSpacing: 2, seed: 5 }),
  ];
}

describe.each(BACKENDS)('Jacobian determinant kernels on %s', (backend) => {
  let us: tf.Tensor[] = [];
  beforeAll(async () => {
    await useKernels(backend);
    us = fields();
  });
  afterAll(async () => {
    tf.dispose(us);
    await setKernelThreads(0);
  });

  it('are registered and run by jacobianDeterminant (forward and gradient)', async () => {
    expect(tf.getKernel(RegkitJacobianDet, backend)?.kernelFunc).toBe(jacobianDetKernelFunc);
    expect(tf.getKernel(RegkitJacobianDetGrad, backend)?.kernelFunc).toBe(
      jacobianDetGradKernelFunc,
    );
    const u = us[2]!;
    const profile = await tf.profile(() =>
      tf.grad((x: tf.Tensor) => tf.sum(jacobianDeterminant(x)))(u),
    );
    expect(profile.kernelNames).toContain(RegkitJacobianDet);
    expect(profile.kernelNames).toContain(RegkitJacobianDetGrad);
  });

  it('match numpy (metrics fixtures) at 1, 2 and 3 threads', async () => {
    for (const n of THREADS) {
      await setKernelThreads(n);
      for (const c of CASES) {
        const u = tf.tensor(c.field, c.shape, 'float32');
        const det = jacobianDeterminant(u);
        expect(det.shape).toEqual(c.shape.slice(0, -1));
        expect(
          maxDiff(det, { shape: det.shape, data: c.det }),
          `${c.name}, ${n} threads`,
        ).toBeLessThan(1e-5);
        tf.dispose([u, det]);
      }
    }
  });

  it('forward and gradient match the composite of tfjs ops, and are bit-identical at 1, 2 and 3 threads', async () => {
    for (const u of us) {
      const w = tf.randomUniform(u.shape.slice(0, -1), -1, 1, 'float32', 7);
      const [refDet, refDu] = withPortableOps(() => detWithGrad(u, w));
      const byThreads: Uint8Array[][] = [];
      for (const n of THREADS) {
        await setKernelThreads(n);
        const [det, du] = detWithGrad(u, w);
        const what = `[${u.shape}], ${n} threads`;
        expect(maxDiff(det, refDet), what).toBeLessThan(1e-5);
        const scale = tf.max(tf.abs(refDu)).dataSync()[0]!;
        expect(maxDiff(du, refDu), what).toBeLessThan(1e-5 * scale);
        byThreads.push([bytes(det), bytes(du)]);
        tf.dispose([det, du]);
      }
      const folded = tf.sum(tf.cast(tf.lessEqual(refDet, 0), 'int32')).dataSync()[0]!;
      if (u.shape.length === 5 && u.shape[1]! > 2) expect(folded).toBeGreaterThan(0);
      for (let t = 1; t < THREADS.length; t++) {
        byThreads[t]!.forEach((r, i) => {
          expect(
            Buffer.compare(r, byThreads[0]![i]!),
            `[${u.shape}] result ${i}, ${THREADS[t]} threads`,
          ).toBe(0);
        });
      }
      tf.dispose([w, refDet, refDu]);
    }
  });

  it('the gradient matches central finite differences of the kernel forward (float64 sums)', async () => {
    await setKernelThreads(2);
    const u = tf.randomUniform([2, 4, 5, 3, 3], -0.6, 0.6, 'float32', 11);
    const w = tf.randomUniform([2, 4, 5, 3], -1, 1, 'float32', 12);
    const wv = w.dataSync();
    const du = tf
      .grad((x: tf.Tensor) => tf.sum(tf.mul(jacobianDeterminant(x), w)))(u)
      .dataSync();
    const base = u.dataSync().slice() as Float32Array;
    const f = (values: Float32Array) => {
      const det = tf.tidy(() => jacobianDeterminant(tf.tensor(values, u.shape)).dataSync());
      let s = 0;
      for (let i = 0; i < det.length; i++) s += det[i]! * wv[i]!;
      return s;
    };
    const h = 1e-2; // det is a cubic in u: central differences are exact up to h² terms
    for (let k = 0; k < base.length; k += 7) {
      const plus = base.slice();
      const minus = base.slice();
      plus[k]! += h;
      minus[k]! -= h;
      const fd = (f(plus) - f(minus)) / (2 * h);
      expect(Math.abs(du[k]! - fd), `component ${k}`).toBeLessThan(
        2e-3 * Math.max(1, Math.abs(fd)),
      );
    }
    tf.dispose([u, w]);
  });

  it('reject fields that are not [B, ...S, nd] with every size >= 2', () => {
    const thin = tf.zeros([1, 1, 4, 4, 3]);
    expect(() => tf.engine().runKernel(RegkitJacobianDet, { field: thin })).toThrow(
      /RegkitJacobianDet: 'field' must be/,
    );
    const u = tf.zeros([1, 4, 4, 2]);
    expect(() =>
      tf.engine().runKernel(RegkitJacobianDetGrad, { dy: tf.zeros([1, 4, 5]), field: u }),
    ).toThrow(/'dy' must be \[1, 4, 4\]/);
    tf.dispose([thin, u]);
  });

  it('1000 forward + backward calls at 3 threads keep numTensors and the kernels memory flat', async () => {
    await setKernelThreads(3);
    const u = randomSmoothField([16, 20, 24], { maxDisplacement: 3, seed: 6 }); // 23040 values
    const dy = tf.ones(u.shape.slice(0, -1));
    const step = () => {
      const det = tf.engine().runKernel(RegkitJacobianDet, { field: u }) as tf.Tensor;
      const du = tf.engine().runKernel(RegkitJacobianDetGrad, { dy, field: u }) as tf.Tensor;
      tf.dispose([det, du]);
    };
    expectMemoryFlat(step);
    tf.dispose([u, dy]);
  });
});
