/**
 * invertField against test/fixtures/fixtures.json (make_fixtures.py: PyTorch plain fixed-point
 * iteration with grid_sample(align_corners=True, padding_mode='border') run to float64
 * convergence, and torch autograd through the unrolled iteration), on cpu and wasm with the
 * WebAssembly warp kernels and with core's portable ops; then the defining identity, Anderson
 * against plain iteration, the implicit gradient against a taped unrolled iteration in tfjs and
 * against finite differences, backward memory independent of the iteration count, leaks, errors.
 */
import { composeFields, randomSmoothField, tf, warp } from '@regkit/core';
import { invertField, type SolveInfo } from '@regkit/invertible';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  BACKENDS,
  checkGradient,
  expectClose,
  loadFixtures,
  maxAbs,
  tensorOf,
  useBackend,
} from './helpers.js';

const cases = loadFixtures().cases.filter((c) => c.op === 'invert');
const TIGHT = {
  tolerance: 1e-6,
  maxIterations: 200,
  backward: { tolerance: 1e-6, maxIterations: 200 },
};

/** Plain iteration v ← −u(x + v) from −u with every step on the tape (the naive layer). */
function unrolledInverse(u: tf.Tensor, iterations: number): tf.Tensor {
  let v = tf.neg(u);
  for (let i = 0; i < iterations; i++) v = tf.neg(warp(u, v, { padding: 'border' }));
  return v;
}

describe.each(
  BACKENDS.flatMap((b) => [
    [b, 'kernel'],
    [b, 'portable'],
  ]) as Array<[(typeof BACKENDS)[number], 'kernel' | 'portable']>,
)('invertField fixtures on %s (%s ops)', (backend, path) => {
  beforeAll(() => useBackend(backend, path));

  it.each(cases)('$name: inverse and gradient match PyTorch', (c) => {
    tf.tidy(() => {
      const u = tensorOf(c.inputs.u!);
      const w = tensorOf(c.inputs.w!);
      const infos: SolveInfo[] = [];
      const loss = (x: tf.Tensor) =>
        tf.sum(tf.mul(invertField(x, { ...TIGHT, onSolve: (s) => infos.push(s) }), w)) as tf.Scalar;
      expectClose(invertField(u, TIGHT), c.outputs.v!, 2e-5, 0, 'v');
      expectClose(tf.grad(loss)(u), c.outputs.dU!, 2e-4, 2e-4, 'dU');
      expect(infos.map((s) => s.pass)).toEqual(['forward', 'backward']);
      expect(infos.every((s) => s.converged)).toBe(true);
      // Anderson needs fewer iterations than the plain iteration torch ran
      expect(infos[0]!.iterations).toBeLessThan(c.params.plainIterations as number);
      // the default tolerance (0.01 voxel) is met, and the answer is that close to the reference
      const v = invertField(u);
      expectClose(v, c.outputs.v!, 1e-2, 0, 'v at default tolerance');
      expect(maxAbs(composeFields(u, v))).toBeLessThan(1e-2);
    });
  });
});

describe.each(BACKENDS)('invertField properties on %s', (backend) => {
  beforeAll(() => useBackend(backend));

  it('2D and 3D, batch 2: u(x + v) + v ≈ 0 and v(x + u) + u ≈ 0; Anderson vs plain', () => {
    for (const [shape, maxDisplacement, controlSpacing] of [
      [[48, 40], 4, 6],
      [[20, 18, 16], 3, 4],
    ] as const) {
      tf.tidy(() => {
        const u = randomSmoothField(shape, { maxDisplacement, controlSpacing, seed: 3, batch: 2 });
        const run = (anderson?: false) => {
          const infos: SolveInfo[] = [];
          const v = invertField(u, { tolerance: 1e-3, anderson, onSolve: (s) => infos.push(s) });
          return { v, iterations: infos[0]!.iterations, converged: infos[0]!.converged };
        };
        const fast = run();
        const plain = run(false);
        for (const r of [fast, plain]) {
          expect(r.converged).toBe(true);
          expect(maxAbs(composeFields(u, r.v))).toBeLessThan(1e-3);
          // the other side holds up to linear resampling errors (these fields are rough: Jacobian
          // determinants down to 0.25), away from the borders (where x + u(x) leaves the image)
          const margin = Math.ceil(maxDisplacement) + 1;
          const inside = tf.slice(
            composeFields(r.v, u),
            [0, ...shape.map(() => margin), 0],
            [-1, ...shape.map((s) => s - 2 * margin), -1],
          );
          expect(maxAbs(inside)).toBeLessThan(0.5);
          expect(tf.mean(tf.abs(inside)).dataSync()[0]).toBeLessThan(0.05);
        }
        expect(fast.iterations).toBeLessThan(plain.iterations);
        // each batch item is its own problem: item 1 alone gives the same inverse
        const one = tf.slice(u, [1], [1]);
        const alone = invertField(one, { tolerance: 1e-6, maxIterations: 100 });
        const inBatch = tf.slice(invertField(u, { tolerance: 1e-6, maxIterations: 100 }), [1], [1]);
        expect(maxAbs(tf.sub(alone, inBatch))).toBeLessThan(1e-4);
        // the inverse of the inverse is the field again (inside)
        const margin = Math.ceil(maxDisplacement) + 1;
        const twice = tf.sub(invertField(fast.v, { tolerance: 1e-4 }), u);
        const inside = tf.slice(
          twice,
          [0, ...shape.map(() => margin), 0],
          [-1, ...shape.map((s) => s - 2 * margin), -1],
        );
        expect(maxAbs(inside)).toBeLessThan(0.5);
        expect(tf.mean(tf.abs(inside)).dataSync()[0]).toBeLessThan(0.05);
      });
    }
  });

  it('implicit gradient equals the gradient of the taped unrolled iteration', () => {
    for (const shape of [
      [12, 10],
      [7, 6, 8],
    ]) {
      tf.tidy(() => {
        const u = randomSmoothField(shape, { maxDisplacement: 1.5, controlSpacing: 4, seed: 9 });
        const w = tf.randomUniform(u.shape, -1, 1, 'float32', 4);
        const implicit = tf.grad(
          (x: tf.Tensor) => tf.sum(tf.mul(invertField(x, TIGHT), w)) as tf.Scalar,
        )(u);
        const unrolled = tf.grad(
          (x: tf.Tensor) => tf.sum(tf.mul(unrolledInverse(x, 80), w)) as tf.Scalar,
        )(u);
        expectClose(implicit, unrolled, 2e-4, 1e-3, `${shape}`);
      });
    }
  });

  it('gradient matches central finite differences (2D, 3D)', () => {
    for (const shape of [
      [10, 9],
      [6, 7, 5],
    ]) {
      tf.tidy(() => {
        const u = randomSmoothField(shape, { maxDisplacement: 1.2, controlSpacing: 4, seed: 5 });
        const w = tf.randomUniform(u.shape, -1, 1, 'float32', 6);
        checkGradient((x) => tf.sum(tf.mul(tf.square(invertField(x, TIGHT)), w)) as tf.Scalar, u, {
          eps: 1e-2,
          rtol: 2e-2,
          atol: 2e-3,
        });
      });
    }
  });

  it('backward memory does not grow with the iteration count (the unrolled one does)', async () => {
    const u = randomSmoothField([24, 24, 24], { maxDisplacement: 3, controlSpacing: 8, seed: 2 });
    const w = tf.randomUniform(u.shape, -1, 1, 'float32', 3);
    const fieldBytes = u.size * 4;
    const peak = async (iterations: number, layer: 'implicit' | 'unrolled') => {
      const opts = {
        tolerance: 0,
        maxIterations: iterations,
        backward: { tolerance: 0, maxIterations: iterations },
      };
      const before = tf.memory().numBytes;
      const info = await tf.profile(() =>
        tf.grad((x: tf.Tensor) => {
          const v = layer === 'implicit' ? invertField(x, opts) : unrolledInverse(x, iterations);
          return tf.sum(tf.mul(v, w)) as tf.Scalar;
        })(u),
      );
      (info.result as tf.Tensor).dispose();
      expect(tf.memory().numBytes).toBe(before);
      return info.peakBytes - before;
    };
    const few = await peak(8, 'implicit');
    const many = await peak(40, 'implicit');
    expect(many).toBe(few);
    // both passes together stay within a small multiple of the field (2m iterates, the
    // ndim² Jacobian blocks, the saved u and v; tf.memory counts reshaped views as bytes too)
    expect(many / fieldBytes).toBeLessThan(32);
    const unrolledFew = await peak(8, 'unrolled');
    const unrolledMany = await peak(40, 'unrolled');
    expect(unrolledMany - unrolledFew).toBeGreaterThan(30 * fieldBytes);
    tf.dispose([u, w]);
  });

  it('leaks nothing: 30 forward + backward passes, 2D and 3D, batch 2', () => {
    const fields = [
      randomSmoothField([16, 14], { maxDisplacement: 3, controlSpacing: 6, seed: 1, batch: 2 }),
      randomSmoothField([8, 9, 7], { maxDisplacement: 1.5, controlSpacing: 4, seed: 2, batch: 2 }),
    ];
    const optimizer = tf.train.sgd(1e-3);
    const u = tf.variable(fields[0]!);
    const step = () =>
      optimizer.minimize(() => tf.mean(tf.square(invertField(u))) as tf.Scalar, true);
    step()!.dispose();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 30; i++) {
      step()!.dispose();
      tf.tidy(() => {
        tf.grad((x: tf.Tensor) => tf.sum(invertField(x, { anderson: false })) as tf.Scalar)(
          fields[1]!,
        );
      });
      invertField(fields[1]!).dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([u, ...fields]);
    optimizer.dispose();
  });

  it('errors name the argument, the shape and the value', () => {
    const u = tf.zeros([1, 5, 5, 2]);
    expect(() => invertField(tf.zeros([1, 5, 5, 3]))).toThrow(
      /invertField\(\): 'field' must be a displacement field .* got shape \[1, 5, 5, 3\]/,
    );
    expect(() => invertField(tf.zeros([5, 5]))).toThrow(/got shape \[5, 5\]/);
    expect(() => invertField(u, { tolerance: Number.NaN })).toThrow(
      /invertField\(\): 'tolerance' must be a finite number ≥ 0, got null/,
    );
    expect(() => invertField(u, { maxIterations: 2.5 })).toThrow(/'maxIterations'.*got 2.5/);
    expect(() => invertField(u, { anderson: { memory: 100 } })).toThrow(
      /'anderson.memory' must be an integer in \[1, 64\], got 100/,
    );
    expect(() => invertField(u, { backward: { tolerance: -2 } })).toThrow(
      /'backward.tolerance' must be a finite number ≥ 0, got -2/,
    );
    expect(() => invertField(u, { onSolve: 3 as unknown as () => void })).toThrow(
      /'onSolve' must be a function, got number/,
    );
    expect(() => invertField(null as unknown as tf.Tensor)).toThrow(/'field' must be a tf.Tensor/);
    u.dispose();
  });
});
