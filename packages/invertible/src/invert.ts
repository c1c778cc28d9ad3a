import { assertField, fail, tf, vjp, warp } from '@regkit/core';
import {
  type AndersonOptions,
  type ResolvedFixedPointOptions,
  resolveFixedPointOptions,
  solveResolved,
} from './fixed_point.js';

/** Convergence report of one fixed-point solve of {@link invertField}. */
export interface SolveInfo {
  /** `'forward'`: the inverse itself; `'backward'`: the adjoint equation of the gradient. */
  pass: 'forward' | 'backward';
  /** Evaluations of the fixed-point map. */
  iterations: number;
  /** Last residual: max |Δ| in voxels (forward), relative L2 norm (backward). */
  residual: number;
  /** Whether the residual went below the tolerance within the iteration limit. */
  converged: boolean;
}

/** Options of the adjoint (gradient) solve of {@link invertField}. */
export interface InvertFieldBackwardOptions {
  /** Largest number of adjoint iterations (default 50). */
  maxIterations?: number;
  /** Stop when ‖g_{k+1} − g_k‖₂ / (1e−5 + ‖g_{k+1}‖₂) is below this (default 1e−3). */
  tolerance?: number;
  /** Anderson options (default `{ memory: 4, beta: 1, epsilon: 1e-4 }`); `false`: plain iteration. */
  anderson?: AndersonOptions | false;
}

/** Options of {@link invertField}. */
export interface InvertFieldOptions {
  /** Largest number of forward iterations (default 50). */
  maxIterations?: number;
  /** Stop when max |v_{k+1} − v_k| is below this many voxels (default 1e−2, as SITReg). */
  tolerance?: number;
  /** Anderson options (default `{ memory: 4, beta: 1, epsilon: 1e-4 }`); `false`: plain iteration. */
  anderson?: AndersonOptions | false;
  /** Options of the adjoint solve in the backward pass. */
  backward?: InvertFieldBackwardOptions;
  /** Called after every solve with its iteration count and residual (diagnostics). */
  onSolve?: (info: SolveInfo) => void;
}

/** Validated options of both passes. */
interface ResolvedInvertOptions {
  forward: ResolvedFixedPointOptions;
  backward: ResolvedFixedPointOptions;
  onSolve: ((info: SolveInfo) => void) | undefined;
}

/** Validates {@link InvertFieldOptions} (`fn` names the caller in error messages). */
export function resolveInvertOptions(
  fn: string,
  options: InvertFieldOptions,
): ResolvedInvertOptions {
  if (options === null || typeof options !== 'object') {
    fail(fn, `'options' must be an object, got ${JSON.stringify(options)}`);
  }
  const forward = resolveFixedPointOptions(fn, {
    maxIterations: options.maxIterations,
    tolerance: options.tolerance,
    anderson: options.anderson,
    criterion: 'maxAbs',
  });
  const b = options.backward ?? {};
  if (b === null || typeof b !== 'object') {
    fail(fn, `'backward' must be an options object, got ${JSON.stringify(b)}`);
  }
  const backward = resolveFixedPointOptions(
    fn,
    {
      maxIterations: b.maxIterations,
      tolerance: b.tolerance ?? 1e-3,
      anderson: b.anderson,
      criterion: 'relativeL2',
    },
    'backward.',
  );
  if (options.onSolve !== undefined && typeof options.onSolve !== 'function') {
    fail(fn, `'onSolve' must be a function, got ${typeof options.onSolve}`);
  }
  return { forward, backward, onSolve: options.onSolve };
}

const BORDER = { padding: 'border' } as const;

/**
 * The deformation inversion layer (SITReg, Honkamaa & Marttinen): the displacement v of the
 * inverse deformation, φ⁻¹(x) = x + v(x), found as the fixed point of (Chen et al. 2008)
 *
 *   v(x) = −u(x + v(x)),
 *
 * iterated from v₀ = −u with Anderson acceleration until max |v_{k+1} − v_k| < `tolerance`
 * voxels; u is sampled linearly with border padding (torch `grid_sample`, align_corners=True,
 * padding_mode='border', as the official layer), so `composeFields(u, v)` and
 * `composeFields(v, u)` are ≈ 0. The iteration converges when u is a contraction, i.e. the
 * deformation is invertible (e.g. {@link boundedCubicSplineDeformation}).
 *
 * Gradient by implicit differentiation (deep equilibrium models): with J_v and J_u the
 * Jacobians of f(v, u) = −u(x + v) at the solution, the adjoint g solves the fixed-point
 * equation g = dy + J_vᵀ g (Anderson again, relative L2 tolerance `backward.tolerance`) and
 * ∂L/∂u = J_uᵀ g. J_v is block diagonal (each output voxel depends on its own v only): its
 * ndim×ndim blocks come from ndim vector–Jacobian products of `warp`, so an adjoint iteration
 * is a few elementwise operations. Only u and v are kept between the passes; neither pass
 * keeps more than 2m fields of iterates, whatever the iteration count.
 *
 * @param field `[B, ...S, ndim]` displacement u (voxels, component k along spatial axis k), 2D or 3D.
 * @returns `[B, ...S, ndim]` displacement v of the inverse (voxels).
 * @example
 * ```ts
 * const u = randomSmoothField([64, 64, 64], { maxDisplacement: 3, controlSpacing: 16 });
 * const v = invertField(u, { onSolve: (s) => console.log(s.iterations, s.residual) });
 * ```
 */
export function invertField(field: tf.Tensor, options: InvertFieldOptions = {}): tf.Tensor {
  const fn = 'invertField';
  assertField(fn, 'field', field);
  const opts = resolveInvertOptions(fn, options);
  return tf.tidy(() => {
    const u = field.dtype === 'float32' ? field : tf.cast(field, 'float32');
    return invertOp(fn, opts)(u);
  });
}

/** The custom-gradient op of {@link invertField} for validated options. */
function invertOp(fn: string, opts: ResolvedInvertOptions): (u: tf.Tensor) => tf.Tensor {
  return tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const u = args[0] as tf.Tensor;
    const save = args[1] as tf.GradSaveFunc;
    const negU = tf.neg(u);
    const result = solveResolved(fn, (v) => warp(negU, v, BORDER), negU, opts.forward);
    opts.onSolve?.({
      pass: 'forward',
      iterations: result.iterations,
      residual: result.residual,
      converged: result.converged,
    });
    save([u, result.solution]);
    return {
      value: result.solution,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => [
        invertBackward(fn, opts, dy as tf.Tensor, saved[0]!, saved[1]!),
      ],
    };
  }) as (u: tf.Tensor) => tf.Tensor;
}

/**
 * ∂L/∂u = J_uᵀ g with g = dy + J_vᵀ g, for f(v, u) = −warp(u, v) at the solution v.
 * Internally component-major `[B, ndim, N]`, so components are contiguous slices.
 */
function invertBackward(
  fn: string,
  opts: ResolvedInvertOptions,
  dy: tf.Tensor,
  u: tf.Tensor,
  v: tf.Tensor,
): tf.Tensor {
  return tf.tidy(() => {
    const nd = u.shape[u.rank - 1]!;
    const batch = u.shape[0]!;
    const n = u.size / (batch * nd);
    const componentMajor = (t: tf.Tensor) =>
      tf.transpose(tf.reshape(t, [batch, n, nd]), [0, 2, 1]) as tf.Tensor3D;
    const component = (t: tf.Tensor3D, k: number) => tf.slice(t, [0, k, 0], [batch, 1, n]);
    // blocks of J_v = −∂warp(u, v)/∂v: negW[k][j] = −∂warp_k/∂v_j, each [B, 1, N]
    const sample = (vv: tf.Tensor) => warp(u, vv, BORDER);
    const negW: tf.Tensor[][] = [];
    for (let k = 0; k < nd; k++) {
      negW.push(
        tf.tidy(() => {
          const unit = new Float32Array(u.size);
          for (let i = k; i < unit.length; i += nd) unit[i] = 1;
          const row = componentMajor(vjp(sample, [v], tf.tensor(unit, u.shape, 'float32'))[0]!);
          return Array.from({ length: nd }, (_, j) => tf.neg(component(row, j)));
        }),
      );
    }
    const dyT = componentMajor(dy);
    const dyParts = tf.tidy(() => Array.from({ length: nd }, (_, j) => component(dyT, j)));
    // adjoint map g ↦ dy + J_vᵀ g: (J_vᵀ g)_j = Σ_k negW[k][j] g_k
    const adjoint = (g: tf.Tensor) => {
      const g3 = g as tf.Tensor3D;
      const parts = Array.from({ length: nd }, (_, k) => component(g3, k));
      const out = Array.from({ length: nd }, (_, j) =>
        tf.tidy(() => tf.addN([dyParts[j]!, ...parts.map((gk, k) => tf.mul(negW[k]![j]!, gk))])),
      );
      return tf.concat(out, 1);
    };
    const result = solveResolved(fn, adjoint, dyT, opts.backward);
    opts.onSolve?.({
      pass: 'backward',
      iterations: result.iterations,
      residual: result.residual,
      converged: result.converged,
    });
    tf.dispose([dyT, ...dyParts, ...negW.flat()]);
    const g = tf.reshape(tf.transpose(result.solution, [0, 2, 1]), u.shape);
    result.solution.dispose();
    const dSample = vjp((uu: tf.Tensor) => warp(uu, v, BORDER), [u], g)[0]!;
    return tf.neg(dSample);
  });
}
