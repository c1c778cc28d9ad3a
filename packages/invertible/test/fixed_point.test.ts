/**
 * fixedPointSolve and its Anderson weights: closed-form fixed points (the Dottie number, affine
 * contractions solved exactly on the host), batch independence, stop criteria, diagnostics,
 * leaks and error messages.
 */
import { tf } from '@regkit/core';
import { andersonWeights, fixedPointSolve } from '@regkit/invertible';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, useBackend } from './helpers.js';

/** x = A x + b per batch item; A is a dense n×n contraction. Returns fn and the exact solutions. */
function affineProblem(batch: number, n: number, contraction: number, seed: number) {
  let s = seed;
  const rand = () => {
    s = (s * 16807) % 2147483647;
    return s / 2147483647;
  };
  const mats: number[][][] = [];
  const rhs: number[][] = [];
  for (let b = 0; b < batch; b++) {
    const a = Array.from({ length: n }, () => Array.from({ length: n }, () => rand() - 0.5));
    const rowMax = Math.max(...a.map((r) => r.reduce((p, q) => p + Math.abs(q), 0)));
    // ‖A‖∞ ≤ c: a dominant diagonal makes plain iteration slow (spectral radius near c)
    const c = contraction * (b === 0 ? 1 : 0.8);
    mats.push(a.map((r, i) => r.map((v, j) => (i === j ? 0.85 * c : 0) + (0.15 * c * v) / rowMax)));
    rhs.push(Array.from({ length: n }, () => 2 * rand() - 1));
  }
  // exact: (I − A) x = b by Gaussian elimination
  const exact = mats.map((a, b) => {
    const m = a.map((r, i) => [...r.map((v, j) => (i === j ? 1 : 0) - v), rhs[b]![i]!]);
    for (let c = 0; c < n; c++) {
      for (let r = c + 1; r < n; r++) {
        const f = m[r]![c]! / m[c]![c]!;
        for (let k = c; k <= n; k++) m[r]![k]! -= f * m[c]![k]!;
      }
    }
    const x = new Array<number>(n).fill(0);
    for (let r = n - 1; r >= 0; r--) {
      let v = m[r]![n]!;
      for (let k = r + 1; k < n; k++) v -= m[r]![k]! * x[k]!;
      x[r] = v / m[r]![r]!;
    }
    return x;
  });
  const aT = tf.tensor3d(mats.map((a) => a[0]!.map((_, j) => a.map((r) => r[j]!)))); // [B, n, n] = Aᵀ
  const bT = tf.tensor2d(rhs);
  const fn = (x: tf.Tensor) =>
    tf.add(tf.reshape(tf.matMul(tf.reshape(x, [batch, 1, n]), aT), [batch, n]), bT);
  return { fn, exact, dispose: () => tf.dispose([aT, bT]) };
}

describe.each(BACKENDS)('fixedPointSolve on %s', (backend) => {
  beforeAll(() => useBackend(backend));

  it('x = cos(x): the Dottie number, plain and Anderson, with diagnostics', () => {
    const x0 = tf.zeros([1, 3]);
    const dottie = 0.7390851332151607;
    const plain = fixedPointSolve((x) => tf.cos(x), x0, { tolerance: 1e-6, anderson: false });
    // the problem is one-dimensional (equal elements): memory 2 is the secant method
    const fast = fixedPointSolve((x) => tf.cos(x), x0, {
      tolerance: 1e-6,
      anderson: { memory: 2 },
    });
    for (const r of [plain, fast]) {
      expect(r.converged).toBe(true);
      expect(r.residual).toBeLessThan(1e-6);
      for (const v of r.solution.dataSync()) expect(v).toBeCloseTo(dottie, 5);
      expect(r.solution.shape).toEqual([1, 3]);
    }
    // plain iteration contracts by sin(0.739) = 0.67 per step; the secant method is superlinear
    expect(plain.iterations).toBeGreaterThan(30);
    expect(fast.iterations).toBeLessThanOrEqual(8);
    tf.dispose([x0, plain.solution, fast.solution]);
  });

  it('affine contractions: Anderson reaches the exact solution per batch item, in fewer steps', () => {
    const p = affineProblem(3, 40, 0.95, 11);
    const x0 = tf.zeros([3, 40]);
    const fast = fixedPointSolve(p.fn, x0, { tolerance: 1e-5, maxIterations: 200 });
    const plain = fixedPointSolve(p.fn, x0, {
      tolerance: 1e-5,
      maxIterations: 400,
      anderson: false,
    });
    const deep = fixedPointSolve(p.fn, x0, {
      tolerance: 1e-5,
      maxIterations: 200,
      anderson: { memory: 8 },
    });
    for (const r of [fast, plain, deep]) {
      expect(r.converged).toBe(true);
      const got = r.solution.arraySync() as number[][];
      got.forEach((row, b) => {
        row.forEach((v, i) => {
          expect(Math.abs(v - p.exact[b]![i]!)).toBeLessThan(2e-4);
        });
      });
    }
    expect(fast.iterations).toBeLessThan(plain.iterations / 2);
    // item 0 alone gives the same answer as in the batch (its own mixing weights)
    const one = affineProblem(1, 40, 0.95, 11);
    const x1 = tf.zeros([1, 40]);
    const alone = fixedPointSolve(one.fn, x1, { tolerance: 0, maxIterations: fast.iterations });
    const batchRow = tf.slice(fast.solution, [0, 0], [1, 40]);
    expect(tf.max(tf.abs(tf.sub(alone.solution, batchRow))).dataSync()[0]).toBeLessThan(1e-5);
    tf.dispose([x0, x1, fast.solution, plain.solution, deep.solution, alone.solution, batchRow]);
    p.dispose();
    one.dispose();
  });

  it('beta < 1 (damped mixing), relative L2 criterion, maxIterations', () => {
    const p = affineProblem(1, 20, 0.9, 5);
    const x0 = tf.zeros([1, 20]);
    const damped = fixedPointSolve(p.fn, x0, {
      tolerance: 1e-5,
      maxIterations: 200,
      anderson: { beta: 0.5, memory: 5 },
    });
    expect(damped.converged).toBe(true);
    const rel = fixedPointSolve(p.fn, x0, { tolerance: 1e-6, criterion: 'relativeL2' });
    expect(rel.converged).toBe(true);
    expect(rel.residual).toBeLessThan(1e-6);
    for (const r of [damped, rel]) {
      const got = r.solution.dataSync();
      for (const [i, e] of p.exact[0]!.entries()) expect(Math.abs(got[i]! - e)).toBeLessThan(1e-4);
    }
    const capped = fixedPointSolve(p.fn, x0, { tolerance: 0, maxIterations: 3 });
    expect(capped.iterations).toBe(3);
    expect(capped.converged).toBe(false);
    expect(capped.residual).toBeGreaterThan(0);
    tf.dispose([x0, damped.solution, rel.solution, capped.solution]);
    p.dispose();
  });

  it('leaks nothing: 50 solves, a throwing fn', () => {
    const p = affineProblem(2, 30, 0.9, 3);
    const x0 = tf.zeros([2, 30]);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 50; i++) {
      const r = fixedPointSolve(p.fn, x0, { tolerance: 1e-4, anderson: { memory: 1 + (i % 6) } });
      r.solution.dispose();
    }
    let calls = 0;
    expect(() =>
      fixedPointSolve(
        (x) => {
          if (++calls === 4) throw new Error('boom');
          return p.fn(x);
        },
        x0,
        { tolerance: 0 },
      ),
    ).toThrow('boom');
    expect(tf.memory().numTensors).toBe(before);
    expect(x0.isDisposed).toBe(false);
    x0.dispose();
    p.dispose();
  });

  it('errors name the argument and the value', () => {
    const x0 = tf.zeros([1, 4]);
    const id = (x: tf.Tensor) => tf.mul(x, 0.5);
    expect(() => fixedPointSolve(id, x0, { maxIterations: 0 })).toThrow(
      /fixedPointSolve\(\): 'maxIterations' must be an integer ≥ 1, got 0/,
    );
    expect(() => fixedPointSolve(id, x0, { tolerance: -1 })).toThrow(/'tolerance'.*got -1/);
    expect(() => fixedPointSolve(id, x0, { anderson: { memory: 0 } })).toThrow(
      /'anderson.memory' must be an integer in \[1, 64\], got 0/,
    );
    expect(() => fixedPointSolve(id, x0, { anderson: { beta: 0 } })).toThrow(/'anderson.beta'/);
    expect(() => fixedPointSolve(id, x0, { anderson: { epsilon: -1 } })).toThrow(
      /'anderson.epsilon'/,
    );
    expect(() => fixedPointSolve(id, x0, { criterion: 'l1' as unknown as 'maxAbs' })).toThrow(
      /'criterion' must be one of 'maxAbs', 'relativeL2', got "l1"/,
    );
    expect(() => fixedPointSolve((x) => tf.reshape(x, [4, 1]), x0)).toThrow(
      /'fn' must return the shape of its input \[1, 4\], got \[4, 1\]/,
    );
    expect(() => fixedPointSolve(id, tf.scalar(1))).toThrow(/'x0' must have a batch axis.*\[\]/);
    expect(() => fixedPointSolve(id, 3 as unknown as tf.Tensor)).toThrow(
      /'x0' must be a tf.Tensor/,
    );
    x0.dispose();
  });
});

describe('andersonWeights', () => {
  it('solves min ‖Σαᵢrᵢ‖² + λ‖α‖² subject to Σαᵢ = 1, λ = ε mean ‖rᵢ‖²', () => {
    // residuals r1 = (1, 0), r2 = (0, 2): α ∝ (4, 1) for ε = 0
    const a = andersonWeights(
      [
        [1, 0],
        [0, 4],
      ],
      0,
    );
    expect(a[0]).toBeCloseTo(0.8, 12);
    expect(a[1]).toBeCloseTo(0.2, 12);
    // three random residuals in R^5: compare with a brute-force grid search of the simplex plane
    const r = [
      [0.3, -1, 0.2, 0.5, 0.1],
      [0.1, 0.4, -0.3, 0.2, 0.9],
      [-0.6, 0.2, 0.7, -0.1, 0.3],
    ];
    const gram = r.map((x) => r.map((y) => x.reduce((s, v, i) => s + v * y[i]!, 0)));
    const eps = 1e-3;
    const w = andersonWeights(gram, eps);
    const lambda = (eps * (gram[0]![0]! + gram[1]![1]! + gram[2]![2]!)) / 3;
    expect(w.reduce((p, q) => p + q, 0)).toBeCloseTo(1, 12);
    const cost = (al: number[]) =>
      r[0]!.reduce(
        (s, _, i) => s + (al[0]! * r[0]![i]! + al[1]! * r[1]![i]! + al[2]! * r[2]![i]!) ** 2,
        0,
      ) +
      lambda * al.reduce((s, v) => s + v * v, 0);
    const best = cost(w);
    for (let d0 = -0.05; d0 <= 0.05; d0 += 0.01) {
      for (let d1 = -0.05; d1 <= 0.05; d1 += 0.01) {
        expect(cost([w[0]! + d0, w[1]! + d1, w[2]! - d0 - d1])).toBeGreaterThanOrEqual(
          best - 1e-12,
        );
      }
    }
    // scale invariance: the weights of 1e−12 · R equal those of R
    andersonWeights(
      gram.map((row) => row.map((v) => v * 1e-12)),
      eps,
    ).forEach((v, i) => {
      expect(v).toBeCloseTo(w[i]!, 9);
    });
    // singular without ε: falls back to the plain step
    expect(
      andersonWeights(
        [
          [0, 0],
          [0, 0],
        ],
        0,
      ),
    ).toEqual([0, 1]);
    expect(andersonWeights([[5]], 1e-4)).toEqual([1]);
  });
});
