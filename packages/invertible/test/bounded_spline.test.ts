/**
 * Bounded cubic B-spline deformations: the bound function against the official SITReg lookup
 * table and against a Python port for other factors (fixtures), the dense field and its gradient
 * against an independent PyTorch evaluation (fixtures; make_fixtures.py also checks that one
 * against SITReg's own transposed-convolution upsampling), the Lipschitz constant of the fields we
 * build (exactly the multiplier), tightness of the bound, and extreme control points that never
 * fold and always invert to < 0.01 voxel.
 */
import { composeFields, jacobianDeterminant, mulberry32, tf } from '@regkit/core';
import {
  boundedCubicSplineDeformation,
  CONTROL_POINT_BOUND_TABLE,
  computeControlPointBound,
  controlPointBound,
  invertField,
  type SolveInfo,
} from '@regkit/invertible';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, expectClose, loadFixtures, maxAbs, tensorOf, useBackend } from './helpers.js';

const fixtures = loadFixtures();
const splineCases = fixtures.cases.filter((c) => c.op === 'spline');

/** Sum over axes j of the forward difference u₀(x + e_j) − u₀(x) of component 0 at voxel x. */
function forwardDifferenceRowSum(u: tf.Tensor, x: number[]): tf.Scalar {
  const at = (p: number[]) => tf.slice(u, [0, ...p, 0], [1, ...p.map(() => 1), 1]);
  const base = at(x);
  return tf.sum(
    tf.addN(x.map((_, j) => tf.sub(at(x.map((v, k) => (k === j ? v + 1 : v))), base))),
  ) as tf.Scalar;
}

/** Jacobian determinants of x + u(x) from forward differences, `[B, ...S − 1]`. */
function forwardDifferenceDeterminant(u: tf.Tensor): tf.Tensor {
  const nd = u.rank - 2;
  const spatial: number[] = u.shape.slice(1, 1 + nd);
  const crop: number[] = spatial.map((s) => s - 1);
  const comp = (t: tf.Tensor, i: number) =>
    tf.reshape(tf.slice(t, [0, ...crop.map(() => 0), i], [-1, ...crop, 1]), [-1, ...crop]);
  const shifted = (j: number) =>
    tf.slice(u, [0, ...crop.map((_, k) => (k === j ? 1 : 0)), 0], [-1, ...crop, nd]);
  const base = tf.slice(u, [0, ...crop.map(() => 0), 0], [-1, ...crop, nd]);
  // a[i][j] = δij + ∂_j u_i
  const a = Array.from({ length: nd }, (_, i) =>
    Array.from({ length: nd }, (_, j) => {
      const d = comp(tf.sub(shifted(j), base), i);
      return i === j ? tf.add(d, 1) : d;
    }),
  );
  const m = (i: number, j: number) => a[i]![j]!;
  if (nd === 2) return tf.sub(tf.mul(m(0, 0), m(1, 1)), tf.mul(m(0, 1), m(1, 0)));
  const minor = (r1: number, c1: number, r2: number, c2: number) =>
    tf.sub(tf.mul(m(r1, c1), m(r2, c2)), tf.mul(m(r1, c2), m(r2, c1)));
  return tf.addN([
    tf.mul(m(0, 0), minor(1, 1, 2, 2)),
    tf.neg(tf.mul(m(0, 1), minor(1, 0, 2, 2))),
    tf.mul(m(0, 2), minor(1, 0, 2, 1)),
  ]);
}

/** Every voxel offset in one period [0, f)^nd. */
function offsets(nd: number, f: number): number[][] {
  const out: number[][] = [[]];
  for (let k = 0; k < nd; k++) {
    const next: number[][] = [];
    for (const o of out) for (let r = 0; r < f; r++) next.push([...o, r]);
    out.splice(0, out.length, ...next);
  }
  return out;
}

describe('control-point bounds', () => {
  it('computeControlPointBound reproduces the official lookup table', () => {
    for (const nd of [2, 3] as const) {
      for (const [f, bound] of Object.entries(CONTROL_POINT_BOUND_TABLE[nd])) {
        if (Number(f) > (nd === 2 ? 256 : 32)) continue;
        expect(
          Math.abs(computeControlPointBound(nd, Number(f)) - bound),
          `${nd}D factor ${f}`,
        ).toBeLessThan(1e-14);
        expect(controlPointBound(nd, Number(f))).toBe(bound);
      }
    }
    expect(controlPointBound(3, 1)).toBe(0.36);
    expect(controlPointBound(3, [2, 2, 2])).toBe(0.3854469526363808);
    expect(controlPointBound(2, 8)).toBe(0.4845970764531083);
  });

  it('off the table: matches the Python port of compute_max_control_point_value', () => {
    for (const b of fixtures.bounds) {
      expect(
        Math.abs(controlPointBound(b.ndim, b.factors) - b.bound),
        `${b.ndim}D ${b.factors}`,
      ).toBeLessThan(1e-14);
    }
  });

  it('errors', () => {
    expect(() => controlPointBound(4 as 3, 2)).toThrow(
      /controlPointBound\(\): 'ndim' must be 2 or 3, got 4/,
    );
    expect(() => computeControlPointBound(2, 0)).toThrow(
      /'upsamplingFactor' must be an integer in \[1, 65536\] or 2 of them, got 0/,
    );
    expect(() => controlPointBound(3, [2, 2])).toThrow(/or 3 of them, got \[2,2\]/);
    expect(() => controlPointBound(2, 1.5)).toThrow(/got 1.5/);
  });
});

describe.each(BACKENDS)('boundedCubicSplineDeformation on %s', (backend) => {
  beforeAll(() => useBackend(backend));

  it.each(splineCases)('$name: field and gradient match PyTorch', (c) => {
    tf.tidy(() => {
      const raw = tensorOf(c.inputs.raw!);
      const w = tensorOf(c.inputs.w!);
      const opts = { upsamplingFactor: c.params.upsamplingFactor as number[] };
      const shape = c.params.spatialShape as number[];
      expectClose(boundedCubicSplineDeformation(raw, shape, opts), c.outputs.u!, 2e-6, 2e-6, 'u');
      const grad = tf.grad((r: tf.Tensor) =>
        tf.sum(tf.mul(boundedCubicSplineDeformation(r, shape, opts), w)),
      )(raw);
      expectClose(grad, c.outputs.dRaw!, 2e-5, 1e-5, 'dRaw');
    });
  });

  it('the Lipschitz constant of the fields built is the multiplier (so the geometry is SITReg’s)', () => {
    // at raw = 0, ∂u/∂raw = multiplier · bound · ∂u/∂c: the largest absolute row sum of a
    // forward-difference Jacobian over all control values |c| ≤ 1 is Σ|∂L/∂c| at the worst offset
    for (const [nd, f] of [
      [2, 1],
      [2, 2],
      [2, 3],
      [2, 4],
      [3, 1],
      [3, 2],
    ] as const) {
      tf.tidy(() => {
        const grid = new Array<number>(nd).fill(9);
        const raw = tf.zeros([1, ...grid, nd]);
        const shape = grid.map((g) => g * f);
        let worst = 0;
        for (const o of offsets(nd, f)) {
          const x = o.map((r) => 4 * f + r);
          const g = tf.grad((r: tf.Tensor) =>
            forwardDifferenceRowSum(boundedCubicSplineDeformation(r, shape), x),
          )(raw);
          worst = Math.max(worst, tf.sum(tf.abs(g)).dataSync()[0]!);
        }
        expect(Math.abs(worst - 0.99), `${nd}D factor ${f}: ${worst}`).toBeLessThan(2e-5);
      });
    }
  });

  it('the bound is tight: 5% above it the worst control points fold', () => {
    for (const [nd, f] of [
      [2, 2],
      [3, 1],
    ] as const) {
      tf.tidy(() => {
        const grid = new Array<number>(nd).fill(8);
        const shape = grid.map((g) => g * f);
        const zero = tf.zeros([1, ...grid, nd]);
        // the worst offset and its sign pattern
        let worst = { sum: 0, x: [] as number[], grad: zero };
        for (const o of offsets(nd, f)) {
          const x = o.map((r) => 4 * f + r);
          const g = tf.grad((r: tf.Tensor) =>
            forwardDifferenceRowSum(boundedCubicSplineDeformation(r, shape), x),
          )(zero);
          const sum = tf.sum(tf.abs(g)).dataSync()[0]!;
          if (sum > worst.sum) worst = { sum, x, grad: g };
        }
        // every component gets the same pattern, −sign: the row sums of the Jacobian are −1
        const sign = tf.mul(tf.sign(tf.sum(worst.grad, -1, true)), -20);
        const raw = tf.add(zero, sign);
        const detAt = (multiplier: number) => {
          const u = boundedCubicSplineDeformation(raw, shape, { multiplier });
          const det = forwardDifferenceDeterminant(u);
          const at = tf.slice(det, [0, ...worst.x], [1, ...worst.x.map(() => 1)]);
          return { at: at.dataSync()[0]!, min: tf.min(det).dataSync()[0]! };
        };
        const safe = detAt(0.99);
        const over = detAt(1.05);
        expect(safe.at).toBeCloseTo(0.01, 4);
        expect(safe.min).toBeGreaterThan(0);
        expect(over.at).toBeCloseTo(-0.05, 4);
      });
    }
  });

  it('extreme random control points never fold and invert to < 0.01 voxel', () => {
    const rand = mulberry32(17);
    const configs = [
      { nd: 2, f: 1, grid: 24 },
      { nd: 2, f: 2, grid: 14 },
      { nd: 2, f: 4, grid: 8 },
      { nd: 3, f: 1, grid: 10 },
      { nd: 3, f: 2, grid: 6 },
    ];
    for (const { nd, f, grid } of configs) {
      for (let trial = 0; trial < 3; trial++) {
        tf.tidy(() => {
          const g = new Array<number>(nd).fill(grid);
          const n = 2 * grid ** nd * nd;
          // saturated tanh: every control point at ± the bound, or uniform in (−bound, bound)
          const values = Float32Array.from({ length: n }, () =>
            trial === 0 ? (rand() < 0.5 ? -30 : 30) : (rand() * 2 - 1) * 6,
          );
          const raw = tf.tensor(values, [2, ...g, nd]);
          const u = boundedCubicSplineDeformation(
            raw,
            g.map((s) => s * f),
          );
          const what = `${nd}D factor ${f} trial ${trial}`;
          expect(tf.min(jacobianDeterminant(u)).dataSync()[0], what).toBeGreaterThan(0);
          expect(tf.min(forwardDifferenceDeterminant(u)).dataSync()[0], what).toBeGreaterThan(0);
          const infos: SolveInfo[] = [];
          const v = invertField(u, { onSolve: (s) => infos.push(s) });
          expect(infos[0]!.converged, `${what}: ${JSON.stringify(infos[0])}`).toBe(true);
          expect(maxAbs(composeFields(u, v)), what).toBeLessThan(0.01);
        });
      }
    }
  });

  it('leaks nothing and errors name the shape and value', () => {
    const raw = tf.randomNormal([1, 4, 5, 2], 0, 1, 'float32', 1);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 20; i++) {
      tf.tidy(() => {
        tf.grad((r: tf.Tensor) => tf.sum(boundedCubicSplineDeformation(r, [8, 10])))(raw);
      });
      boundedCubicSplineDeformation(raw, [9, 7], { upsamplingFactor: 2 }).dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
    expect(() => boundedCubicSplineDeformation(raw, [8, 10, 4])).toThrow(
      /boundedCubicSplineDeformation\(\): 'controlPoints' must be \[B, \.\.\.G, 3\] for 3D spatialShape \[8, 10, 4\], got \[1, 4, 5, 2\]/,
    );
    expect(() => boundedCubicSplineDeformation(raw, [9, 10])).toThrow(
      /'upsamplingFactor' is needed: spatialShape \[9, 10\] is not an integer multiple of the control grid \[4, 5\]/,
    );
    expect(() => boundedCubicSplineDeformation(raw, [8, 10], { upsamplingFactor: 0 })).toThrow(
      /'upsamplingFactor' must be an integer/,
    );
    expect(() => boundedCubicSplineDeformation(raw, [8, 10], { multiplier: -1 })).toThrow(
      /'multiplier' must be a finite number > 0, got -1/,
    );
    expect(() => boundedCubicSplineDeformation(raw, [8])).toThrow(/'spatialShape'/);
    raw.dispose();
  });
});
