import {
  assertNdim,
  assertSpatialShape,
  assertTensor,
  cubicBSpline,
  cubicBSplineField,
  fail,
  fmtShape,
  tf,
} from '@regkit/core';

/**
 * The official lookup table of optimal control-point bounds (SITReg
 * `_DenseExtractionNetwork.CONTROL_POINT_UPPER_BOUNDS_LOOKUP`), keyed by dimensionality and
 * isotropic upsampling factor: |c| below the bound keeps the sampled deformation a contraction
 * (invertible by the deformation inversion layer, positive Jacobian determinants). The bound
 * is the reciprocal of the factors of Table 16 in the paper (e.g. 3D, factor 1: 1/2.7778 = 0.36).
 */
export const CONTROL_POINT_BOUND_TABLE: Readonly<Record<2 | 3, Readonly<Record<number, number>>>> =
  {
    2: {
      1: 0.44999999999999996,
      2: 0.4923274169638207,
      4: 0.47980320571640545,
      8: 0.4845970764531083,
      16: 0.48612715818186963,
      32: 0.48728730908780815,
      64: 0.4879642422739664,
      128: 0.48831189411920906,
      256: 0.48848723983607806,
      512: 0.48857585860314345,
      1024: 0.48862023712123526,
      2048: 0.48864249909355595,
      4096: 0.4886536264200244,
      8192: 0.48865919697612337,
    },
    3: {
      1: 0.36,
      2: 0.3854469526363808,
      4: 0.39803114051999844,
      8: 0.4007250760586097,
      16: 0.40175329749498856,
      32: 0.40253633025170044,
      64: 0.4029187201371043,
      128: 0.4031077300385704,
      256: 0.4032092148874895,
      512: 0.4032603042953307,
    },
  };

/**
 * Samples of the cubic B-spline at the offsets where a grid upsampled by `factor` (voxel
 * centres, align_corners=False) meets the control grid: β₃(i/f + (1 + odd)/(2f) − 2) for
 * i < 4f − odd (SITReg `cubic_bspline_kernel_1d`).
 */
function upsamplingKernel(factor: number): number[] {
  const odd = factor % 2;
  const size = 4 * factor - odd;
  const start = (1 + odd) / (2 * factor) - 2;
  return Array.from({ length: size }, (_, i) => cubicBSpline(i / factor + start));
}

function factorsOf(
  fn: string,
  ndim: number,
  upsamplingFactor: number | readonly number[],
): number[] {
  const f =
    typeof upsamplingFactor === 'number'
      ? new Array<number>(ndim).fill(upsamplingFactor)
      : Array.isArray(upsamplingFactor)
        ? [...upsamplingFactor]
        : [];
  if (f.length !== ndim || !f.every((v) => Number.isInteger(v) && v >= 1 && v <= 65536)) {
    fail(
      fn,
      `'upsamplingFactor' must be an integer in [1, 65536] or ${ndim} of them, got ${JSON.stringify(upsamplingFactor)}`,
    );
  }
  return f;
}

/**
 * The optimal control-point bound (SITReg eq. 9, Appendix D.3) computed for any upsampling
 * factors, a port of the official `compute_max_control_point_value`:
 *
 *   bound = 1 / max_t Σ_c | Σ_j f_j Δ_j B(t − c) |,
 *
 * with B the tensor-product cubic B-spline sampled at the upsampled grid (offsets t of
 * {@link boundedCubicSplineDeformation}), Δ_j the forward difference between neighbouring fine
 * voxels along axis j and f_j the factor of axis j; the maximum runs over the sampling offsets
 * (half of them, by symmetry). float64; about (f/2)^ndim offsets.
 *
 * @param ndim 2 or 3.
 * @param upsamplingFactor fine voxels per control point, one integer or one per axis.
 * @returns the bound (without the 0.99 safety multiplier).
 */
export function computeControlPointBound(
  ndim: 2 | 3,
  upsamplingFactor: number | readonly number[],
): number {
  const fn = 'computeControlPointBound';
  assertNdim(fn, ndim);
  const factors = factorsOf(fn, ndim, upsamplingFactor);
  const padded = factors.map((f) => [0, ...upsamplingKernel(f), 0]);
  const value = padded.map((p) => p.slice(0, -1));
  const diff = padded.map((p) => p.slice(1).map((v, i) => v - p[i]!));
  const starts = factors.map((f) => Math.ceil((f + 1) / 2));
  let worst = 0;
  const start = new Array<number>(ndim).fill(0);
  for (;;) {
    // taps of axis k at this offset: values and differences, every factor-th sample
    const taps = (arr: number[][], k: number) => {
      const out: number[] = [];
      for (let i = start[k]!; i < arr[k]!.length; i += factors[k]!) out.push(arr[k]![i]!);
      return out;
    };
    const vals = factors.map((_, k) => taps(value, k));
    const diffs = factors.map((_, k) => taps(diff, k));
    const sizes = vals.map((v) => v.length);
    const total = sizes.reduce((p, q) => p * q, 1);
    let sum = 0;
    const idx = new Array<number>(ndim).fill(0);
    for (let e = 0; e < total; e++) {
      let s = 0;
      for (let j = 0; j < ndim; j++) {
        let prod = factors[j]!;
        for (let k = 0; k < ndim; k++) prod *= k === j ? diffs[k]![idx[k]!]! : vals[k]![idx[k]!]!;
        s += prod;
      }
      sum += Math.abs(s);
      for (let k = ndim - 1; k >= 0; k--) {
        if (++idx[k]! < sizes[k]!) break;
        idx[k] = 0;
      }
    }
    if (sum > worst) worst = sum;
    let k = ndim - 1;
    for (; k >= 0; k--) {
      if (++start[k]! < starts[k]!) break;
      start[k] = 0;
    }
    if (k < 0) break;
  }
  return 1 / worst;
}

const computed = new Map<string, number>();

/**
 * The optimal control-point bound for `ndim` and the upsampling factor: the official lookup
 * table ({@link CONTROL_POINT_BOUND_TABLE}) for isotropic factors it lists, else
 * {@link computeControlPointBound} (cached), as SITReg does.
 *
 * @param ndim 2 or 3.
 * @param upsamplingFactor fine voxels per control point, one integer or one per axis.
 * @returns the bound (without the 0.99 safety multiplier); e.g. 0.36 for 3D, factor 1.
 */
export function controlPointBound(
  ndim: 2 | 3,
  upsamplingFactor: number | readonly number[],
): number {
  const fn = 'controlPointBound';
  assertNdim(fn, ndim);
  const factors = factorsOf(fn, ndim, upsamplingFactor);
  if (factors.every((f) => f === factors[0])) {
    const table = CONTROL_POINT_BOUND_TABLE[ndim][factors[0]!];
    if (table !== undefined) return table;
  }
  const key = `${ndim}:${factors.join(',')}`;
  let bound = computed.get(key);
  if (bound === undefined) {
    bound = computeControlPointBound(ndim, factors);
    computed.set(key, bound);
  }
  return bound;
}

/** Options of {@link boundedCubicSplineDeformation}. */
export interface BoundedSplineOptions {
  /**
   * Fine voxels per control point, one integer or one per axis. Default: spatialShape / grid
   * when that is an integer on every axis.
   */
  upsamplingFactor?: number | readonly number[];
  /** Safety multiplier of the bound (default 0.99, SITReg's `max_control_point_multiplier`); must be < 1 to guarantee invertibility. */
  multiplier?: number;
}

/**
 * Edge-replicates `x` along `axis` by `lo` entries before and `hi` after (border extrapolation
 * of the control grid, as SITReg's `CubicSplineSampler`).
 */
function replicatePad(x: tf.Tensor, axis: number, lo: number, hi: number): tf.Tensor {
  if (lo === 0 && hi === 0) return x;
  const size = x.shape[axis]!;
  const shape: number[] = x.shape;
  const edge = (at: number) =>
    tf.slice(
      x,
      shape.map((_, i) => (i === axis ? at : 0)),
      shape.map((s, i) => (i === axis ? 1 : s)),
    );
  const first = edge(0);
  const last = edge(size - 1);
  return tf.concat(
    [...new Array<tf.Tensor>(lo).fill(first), x, ...new Array<tf.Tensor>(hi).fill(last)],
    axis,
  );
}

/**
 * A cubic B-spline deformation that is invertible by construction (SITReg §3.4, Appendix D):
 * control points c = multiplier · bound(f) · tanh(controlPoints), in control-grid voxels, are
 * upsampled by the factor f (no prefilter, border-replicated control grid) to
 *
 *   u_k(x) = f_k Σ_j c_{j,k} Π_i β₃(y_i − j_i),  y_i = (x_i + 1/2) / f_i − 1/2,
 *
 * i.e. control point j sits at the centre of fine voxels f·j … f·j + f − 1 (align_corners=False
 * between the grids, SITReg's `reference=Start()`), and u is in fine voxels. With
 * multiplier < 1 u is a contraction: for an isotropic factor every row of every
 * finite-difference Jacobian of u has absolute sum < 1 (per axis factors: in the max norm
 * weighted by 1/f_k), so x + u(x) is invertible, its Jacobian determinants (one-sided or
 * central differences) are positive and {@link invertField} converges.
 * Differentiable in `controlPoints`.
 *
 * @param controlPoints `[B, ...G, ndim]` unbounded network outputs on the control grid.
 * @param spatialShape output `[H, W]` or `[D, H, W]`, usually G · f.
 * @returns `[B, ...spatialShape, ndim]` displacement in output voxels.
 * @example
 * ```ts
 * const raw = tf.randomNormal([1, 12, 12, 12, 3]);   // e.g. a 1×1×1 conv output
 * const u = boundedCubicSplineDeformation(raw, [48, 48, 48], { upsamplingFactor: 4 });
 * ```
 */
export function boundedCubicSplineDeformation(
  controlPoints: tf.Tensor,
  spatialShape: readonly number[],
  options: BoundedSplineOptions = {},
): tf.Tensor {
  const fn = 'boundedCubicSplineDeformation';
  assertTensor(fn, 'controlPoints', controlPoints);
  const nd = assertSpatialShape(fn, 'spatialShape', spatialShape);
  if (controlPoints.rank !== nd + 2 || controlPoints.shape[nd + 1] !== nd) {
    fail(
      fn,
      `'controlPoints' must be [B, ...G, ${nd}] for ${nd}D spatialShape ${fmtShape(spatialShape)}, got ${fmtShape(controlPoints.shape)}`,
    );
  }
  if (options === null || typeof options !== 'object') {
    fail(fn, `'options' must be an object, got ${JSON.stringify(options)}`);
  }
  const grid = controlPoints.shape.slice(1, 1 + nd);
  let factorOption = options.upsamplingFactor;
  if (factorOption === undefined) {
    const ratios = spatialShape.map((s, k) => s / grid[k]!);
    if (!ratios.every((r) => Number.isInteger(r))) {
      fail(
        fn,
        `'upsamplingFactor' is needed: spatialShape ${fmtShape(spatialShape)} is not an integer multiple of the control grid ${fmtShape(grid)}`,
      );
    }
    factorOption = ratios;
  }
  const factors = factorsOf(fn, nd, factorOption);
  const multiplier = options.multiplier ?? 0.99;
  if (typeof multiplier !== 'number' || !Number.isFinite(multiplier) || multiplier <= 0) {
    fail(fn, `'multiplier' must be a finite number > 0, got ${JSON.stringify(options.multiplier)}`);
  }
  const bound = controlPointBound(nd, factors);
  // control grid range each axis needs: y ∈ [y(0), y(S − 1)], taps floor(y) − 1 … floor(y) + 2
  const pads = factors.map((f, k) => {
    const y = (x: number) => (x + 0.5) / f - 0.5;
    const lo = Math.max(0, 1 - Math.floor(y(0)));
    const hi = Math.max(0, Math.floor(y(spatialShape[k]! - 1)) + 2 - (grid[k]! - 1));
    return [lo, hi] as const;
  });
  return tf.tidy(() => {
    const raw =
      controlPoints.dtype === 'float32' ? controlPoints : tf.cast(controlPoints, 'float32');
    // bounded control points, already scaled to fine voxels (component k times f_k)
    const scale = factors.every((f) => f === factors[0])
      ? multiplier * bound * factors[0]!
      : tf.tensor1d(factors.map((f) => multiplier * bound * f));
    let c = tf.mul(tf.tanh(raw), scale);
    for (let k = 0; k < nd; k++) c = replicatePad(c, k + 1, pads[k]![0], pads[k]![1]);
    return cubicBSplineField(c, spatialShape, {
      spacing: factors,
      origin: factors.map((f, k) => (f - 1) / 2 - pads[k]![0] * f),
    });
  });
}
