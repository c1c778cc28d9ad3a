import { RegkitWarp, type RegkitWarpAttrs, RegkitWarpGrad } from './kernel_names.js';
import { resizeField } from './resize.js';
import { tf } from './tf.js';
import { assertField, fail, fmtShape } from './validate.js';
import { vjp } from './vjp.js';
import { hasKernels, warp } from './warp.js';

/**
 * Composes two displacement fields: the displacement of x ↦ φ_outer(φ_inner(x)),
 *
 *   w(x) = inner(x) + outer(x + inner(x)),
 *
 * with `outer` sampled linearly and border padding. Hence
 * `warp(warp(m, outer), inner) ≈ warp(m, composeFields(outer, inner))`.
 * Differentiable with respect to both fields.
 *
 * @param outer `[B, ...S, ndim]` displacement applied second (voxels).
 * @param inner `[B, ...S, ndim]` displacement applied first (voxels).
 * @returns `[B, ...S, ndim]`.
 */
export function composeFields(outer: tf.Tensor, inner: tf.Tensor): tf.Tensor {
  const fn = 'composeFields';
  assertField(fn, 'outer', outer);
  assertField(fn, 'inner', inner);
  if (!tf.util.arraysEqual(outer.shape, inner.shape)) {
    fail(
      fn,
      `'outer' ${fmtShape(outer.shape)} and 'inner' ${fmtShape(inner.shape)} must have the same shape`,
    );
  }
  return tf.tidy(() => tf.add(inner, warp(outer, inner, { padding: 'border' })));
}

/** Options of {@link integrateVelocity}. */
export interface IntegrateVelocityOptions {
  /** Number of squaring steps (default 7, as VoxelMorph); 0 returns the velocity itself. */
  steps?: number;
}

/**
 * Integrates a stationary velocity field by scaling and squaring:
 * u = v / 2^steps, then `steps` times u ← composeFields(u, u), giving
 * u ≈ exp(v) − id. `integrateVelocity(-v)` is the inverse deformation.
 *
 * @param velocity `[B, ...S, ndim]` stationary velocity (voxels).
 * @returns `[B, ...S, ndim]` displacement of the diffeomorphism exp(v).
 */
export function integrateVelocity(
  velocity: tf.Tensor,
  options: IntegrateVelocityOptions = {},
): tf.Tensor {
  const fn = 'integrateVelocity';
  const steps = checkedSteps(fn, velocity, options);
  if (steps === 0) return tf.tidy(() => tf.mul(velocity, 1));
  return scalingAndSquaring(velocity, steps);
}

/** The velocity checked as a field and `options.steps` (default 7) as an integer in [0, 30]. */
function checkedSteps(fn: string, velocity: tf.Tensor, options: IntegrateVelocityOptions): number {
  assertField(fn, 'velocity', velocity);
  const steps = options.steps ?? 7;
  if (!Number.isInteger(steps) || steps < 0 || steps > 30) {
    fail(fn, `'steps' must be an integer in [0, 30], got ${steps}`);
  }
  return steps;
}

/**
 * Vector–Jacobian product of one squaring u ↦ u + warp(u, u) (linear, border padding) at `u`
 * with cotangent `g`: g + ∂warp/∂image(g) + ∂warp/∂field(g). Where the `RegkitWarpGrad`
 * kernel is registered and no higher-order gradient is being recorded it runs that kernel
 * alone (the forward warp is not recomputed); otherwise it differentiates `composeFields`.
 * Returns a new tensor; `u` and `g` are left as they are.
 */
function squaringVjp(u: tf.Tensor, g: tf.Tensor): tf.Tensor {
  if (tf.engine().state.gradientDepth === 0 && hasKernels(RegkitWarp, RegkitWarpGrad)) {
    return tf.tidy(() => {
      const attrs: RegkitWarpAttrs = { interpolation: 'linear', padding: 'border' };
      const [dImage, dField] = tf
        .engine()
        .runKernel(
          RegkitWarpGrad,
          { dy: g, image: u, field: u },
          attrs as unknown as tf.NamedAttrMap,
        ) as tf.Tensor[];
      return tf.addN([g, dImage!, dField!]);
    });
  }
  return vjp((x) => composeFields(x, x), [u], g)[0]!;
}

/** Scaling and squaring's forward: the result u and the fields u₀ … u_{steps−1} it squared. */
function squareUp(velocity: tf.Tensor, steps: number): { value: tf.Tensor; fields: tf.Tensor[] } {
  const fields: tf.Tensor[] = [];
  let u = tf.mul(velocity, 1 / 2 ** steps);
  for (let i = 0; i < steps; i++) {
    fields.push(u);
    u = composeFields(u, u);
  }
  return { value: u, fields };
}

/** Scaling and squaring's backward: g ↦ ∂/∂v ⟨exp(v) − id, g⟩ from the fields of {@link squareUp}. */
function squareDown(fields: tf.Tensor[], dy: tf.Tensor, steps: number): tf.Tensor {
  let g = dy;
  for (let i = steps - 1; i >= 0; i--) {
    const next = squaringVjp(fields[i]!, g);
    if (g !== dy) g.dispose();
    g = next;
  }
  const dv = tf.mul(g, 1 / 2 ** steps);
  if (g !== dy) g.dispose();
  return dv;
}

/**
 * Scaling and squaring with a hand-written backward pass: the forward keeps the `steps` fields
 * u₀ … u_{steps−1}; the backward runs the vector–Jacobian product of one squaring u ↦ u∘u at a
 * time, g_{i} = vjp(u_i ↦ composeFields(u_i, u_i))(g_{i+1}), freeing each step's gradients
 * before the next (with the warp kernels, one `RegkitWarpGrad` call per step, no forward
 * recomputed). The gradient is the one autodiff gives, but tfjs's autodiff holds every
 * intermediate gradient of the chain until the backward pass ends (about four fields per
 * step); this holds about `steps` + 4 fields.
 */
function scalingAndSquaring(velocity: tf.Tensor, steps: number): tf.Tensor {
  const run = tf.customGrad(((v: tf.Tensor, save: tf.GradSaveFunc) => {
    const { value, fields } = squareUp(v, steps);
    save(fields);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => squareDown(saved, dy, steps),
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return run(velocity);
}

/** What {@link integrateVelocityWithVjp} returns. */
export interface VelocityIntegration {
  /** `[B, ...S, ndim]` exp(v) − id, as {@link integrateVelocity} (the caller disposes it). */
  value: tf.Tensor;
  /**
   * dy ↦ dyᵀ ∂value/∂v, `[B, ...S, ndim]` (a new tensor): the gradient of ⟨value, dy⟩ with
   * respect to the velocity, the same as `tf.grad` through {@link integrateVelocity}, without
   * running the forward again. May be called any number of times before {@link dispose}.
   */
  vjp(dy: tf.Tensor): tf.Tensor;
  /** Frees the `steps` fields kept for {@link vjp} (not `value`). */
  dispose(): void;
}

/**
 * Scaling and squaring (as {@link integrateVelocity}) that keeps what its backward pass needs,
 * for a caller that runs the forward once and the backward later by hand — e.g. an optimiser
 * that takes the gradient of a loss on another grid first (`registerImages`): with
 * `tf.grad(v => ⟨integrateVelocity(v), g⟩)` the forward would run twice.
 *
 * @param velocity `[B, ...S, ndim]` stationary velocity (voxels).
 * @returns the displacement, its vector–Jacobian product and a `dispose` for the kept fields.
 */
export function integrateVelocityWithVjp(
  velocity: tf.Tensor,
  options: IntegrateVelocityOptions = {},
): VelocityIntegration {
  const fn = 'integrateVelocityWithVjp';
  const steps = checkedSteps(fn, velocity, options);
  const { value, fields } = tf.tidy(() => squareUp(velocity, steps));
  let live = true;
  return {
    value,
    vjp: (dy: tf.Tensor) => {
      if (!live) fail(fn, 'vjp() called after dispose()');
      if (!tf.util.arraysEqual(dy.shape, velocity.shape)) {
        fail(
          fn,
          `'dy' ${fmtShape(dy.shape)} must have the velocity's shape ${fmtShape(velocity.shape)}`,
        );
      }
      return tf.tidy(() => squareDown(fields, dy, steps));
    },
    dispose: () => {
      live = false;
      tf.dispose(fields);
    },
  };
}

/** Options of {@link velocityDeformation}. */
export interface VelocityDeformationOptions extends IntegrateVelocityOptions {
  /**
   * Integrate at 1/`downsize` of the velocity's resolution (each axis at least 2 voxels),
   * then resize the displacements back (default 1: full resolution; VoxelMorph uses 2).
   */
  downsize?: number;
  /** Also integrate −v for the inverse deformation (default true). */
  inverse?: boolean;
}

/**
 * The deformations of a stationary velocity field: `forward` = exp(v) − id and, unless
 * `inverse: false`, `inverse` = exp(−v) − id, by scaling and squaring
 * ({@link integrateVelocity}) at 1/`downsize` resolution with the velocity and both
 * displacements resized linearly (`resizeField`, which rescales the vectors too).
 *
 * @param velocity `[B, ...S, ndim]` stationary velocity (voxels).
 * @returns `{ forward, inverse? }`, `[B, ...S, ndim]` each (the caller disposes).
 */
export function velocityDeformation(
  velocity: tf.Tensor,
  options: VelocityDeformationOptions = {},
): { forward: tf.Tensor; inverse?: tf.Tensor } {
  const fn = 'velocityDeformation';
  assertField(fn, 'velocity', velocity);
  const f = options.downsize ?? 1;
  if (!Number.isInteger(f) || f < 1) {
    fail(fn, `'downsize' must be a positive integer, got ${options.downsize}`);
  }
  const withInverse = options.inverse ?? true;
  const out = tf.tidy(() => {
    const spatial = velocity.shape.slice(1, -1);
    const coarse = spatial.map((s) => Math.max(2, Math.round(s / f)));
    const v = f > 1 ? resizeField(velocity, coarse) : velocity;
    const steps = { steps: options.steps };
    const up = (u: tf.Tensor) => (f > 1 ? resizeField(u, spatial) : u);
    const forward = up(integrateVelocity(v, steps));
    return withInverse ? [forward, up(integrateVelocity(tf.neg(v), steps))] : [forward];
  });
  return out.length > 1 ? { forward: out[0]!, inverse: out[1]! } : { forward: out[0]! };
}
