import { cubicBSplineField } from './bspline.js';
import { tf } from './tf.js';
import { assertSpatialShape, fail, perAxis } from './validate.js';

/**
 * A seeded uniform stream: call it for the next number in [0, 1). `state` (a uint32) is its
 * whole state: read it to checkpoint the stream, assign it to continue from there.
 */
export interface SeededRandom {
  (): number;
  state: number;
}

/**
 * Small seeded PRNG (mulberry32): deterministic uniform numbers in [0, 1) on every platform.
 * Its `state` can be saved and restored (a resumed training run continues the same stream).
 */
export function mulberry32(seed: number): SeededRandom {
  let a = seed >>> 0;
  const next = (() => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }) as SeededRandom;
  Object.defineProperty(next, 'state', {
    get: () => a,
    set: (s: number) => {
      a = s >>> 0;
    },
  });
  return next;
}

/** Options of {@link randomSmoothField}. */
export interface RandomSmoothFieldOptions {
  /** Bound on every displacement component, in voxels (default 4). */
  maxDisplacement?: number;
  /** Control-point spacing in voxels, one value or per axis (default 16). */
  controlSpacing?: number | readonly number[];
  /** PRNG seed (default 0): equal seeds give equal fields on every backend. */
  seed?: number;
  /** Batch size (default 1); each item gets its own control points. */
  batch?: number;
}

/**
 * Seeded random smooth displacement for experiments and tests: control points
 * uniform in [−maxDisplacement, maxDisplacement] on a cubic B-spline grid of the
 * given spacing covering the image. Since B-spline weights are a partition of
 * unity, every component satisfies |u_k| ≤ maxDisplacement. Not guaranteed
 * fold-free: keep maxDisplacement below about 0.4 × controlSpacing for that.
 *
 * @param spatialShape `[H, W]` or `[D, H, W]`.
 * @returns `[batch, ...spatialShape, ndim]` displacement in voxels.
 */
export function randomSmoothField(
  spatialShape: readonly number[],
  options: RandomSmoothFieldOptions = {},
): tf.Tensor {
  const fn = 'randomSmoothField';
  const nd = assertSpatialShape(fn, 'spatialShape', spatialShape);
  const maxDisplacement = options.maxDisplacement ?? 4;
  const spacing = perAxis(fn, 'controlSpacing', options.controlSpacing ?? 16, nd);
  const batch = options.batch ?? 1;
  if (!(maxDisplacement >= 0)) fail(fn, `'maxDisplacement' must be ≥ 0, got ${maxDisplacement}`);
  if (spacing.some((s) => !(s > 0)))
    fail(fn, `'controlSpacing' must be > 0, got ${JSON.stringify(spacing)}`);
  if (!Number.isInteger(batch) || batch < 1)
    fail(fn, `'batch' must be a positive integer, got ${batch}`);
  const grid = spatialShape.map((s, k) => Math.ceil((s - 1) / spacing[k]!) + 3);
  const rand = mulberry32(options.seed ?? 0);
  const n = batch * grid.reduce((a, b) => a * b, 1) * nd;
  const values = new Float32Array(n);
  for (let i = 0; i < n; i++) values[i] = (2 * rand() - 1) * maxDisplacement;
  return tf.tidy(() =>
    cubicBSplineField(tf.tensor(values, [batch, ...grid, nd]), spatialShape, {
      spacing,
      origin: spacing.map((s) => -s),
    }),
  );
}
