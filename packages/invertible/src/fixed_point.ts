import { assertTensor, fail, fmtShape, tf } from '@regkit/core';

/** Options of Anderson acceleration (Walker & Ni 2011), as in the official deformation inversion layer. */
export interface AndersonOptions {
  /** m, the number of past iterates mixed (default 4); 1 is plain fixed-point iteration. */
  memory?: number;
  /** Mixing β (default 1): x ← β Σ αᵢ f(xᵢ) + (1 − β) Σ αᵢ xᵢ. */
  beta?: number;
  /**
   * Tikhonov regularisation ε of the m×m Gram matrix R of the residuals, relative to its scale
   * (default 1e−4): the weights use R + ε · mean(diag R) · I, so they do not depend on the
   * scale of the problem (the official solver adds ε·I, an absolute ε).
   */
  epsilon?: number;
}

/**
 * How convergence is measured from the residual r = f(x) − x of the latest iterate:
 * `'maxAbs'`: max |r| over every element (voxels, for fields);
 * `'relativeL2'`: ‖r‖₂ / (1e−5 + ‖f(x)‖₂) over the whole tensor.
 */
export type StopCriterion = 'maxAbs' | 'relativeL2';

/** Options of {@link fixedPointSolve}. */
export interface FixedPointOptions {
  /** Largest number of evaluations of `fn` (default 50). */
  maxIterations?: number;
  /** Stop when the residual (see `criterion`) is below this (default 1e−2); 0 runs `maxIterations`. */
  tolerance?: number;
  /** `'maxAbs'` (default) or `'relativeL2'`. */
  criterion?: StopCriterion;
  /** Anderson acceleration options (default `{ memory: 4, beta: 1, epsilon: 1e-4 }`); `false`: plain iteration. */
  anderson?: AndersonOptions | false;
}

/** Result of {@link fixedPointSolve}. */
export interface FixedPointResult {
  /** f(x_k) of the last iterate x_k, shaped like `x0`. The caller owns (and disposes) it. */
  solution: tf.Tensor;
  /** Evaluations of `fn` used. */
  iterations: number;
  /** The stop criterion of the last iterate: max |f(x_k) − x_k| or the relative L2 norm. */
  residual: number;
  /** Whether `residual < tolerance` was reached within `maxIterations`. */
  converged: boolean;
}

/** Options after defaults and validation. */
export interface ResolvedFixedPointOptions {
  maxIterations: number;
  tolerance: number;
  criterion: StopCriterion;
  memory: number;
  beta: number;
  epsilon: number;
}

/** Validates fixed-point options for the function `fn` (the name used in error messages). */
export function resolveFixedPointOptions(
  fn: string,
  options: FixedPointOptions,
  prefix = '',
): ResolvedFixedPointOptions {
  if (options === null || typeof options !== 'object') {
    fail(fn, `'${prefix}options' must be an object, got ${JSON.stringify(options)}`);
  }
  const maxIterations = options.maxIterations ?? 50;
  if (!Number.isInteger(maxIterations) || maxIterations < 1) {
    fail(
      fn,
      `'${prefix}maxIterations' must be an integer ≥ 1, got ${JSON.stringify(options.maxIterations)}`,
    );
  }
  const tolerance = options.tolerance ?? 1e-2;
  if (typeof tolerance !== 'number' || !Number.isFinite(tolerance) || tolerance < 0) {
    fail(
      fn,
      `'${prefix}tolerance' must be a finite number ≥ 0, got ${JSON.stringify(options.tolerance)}`,
    );
  }
  const criterion = options.criterion ?? 'maxAbs';
  if (criterion !== 'maxAbs' && criterion !== 'relativeL2') {
    fail(
      fn,
      `'${prefix}criterion' must be one of 'maxAbs', 'relativeL2', got ${JSON.stringify(criterion)}`,
    );
  }
  const a = options.anderson;
  if (a !== undefined && a !== false && (a === null || typeof a !== 'object')) {
    fail(fn, `'${prefix}anderson' must be an options object or false, got ${JSON.stringify(a)}`);
  }
  const anderson = a === false ? { memory: 1 } : (a ?? {});
  const memory = anderson.memory ?? 4;
  if (!Number.isInteger(memory) || memory < 1 || memory > 64) {
    fail(
      fn,
      `'${prefix}anderson.memory' must be an integer in [1, 64], got ${JSON.stringify(anderson.memory)}`,
    );
  }
  const beta = anderson.beta ?? 1;
  if (typeof beta !== 'number' || !Number.isFinite(beta) || beta <= 0) {
    fail(
      fn,
      `'${prefix}anderson.beta' must be a finite number > 0, got ${JSON.stringify(anderson.beta)}`,
    );
  }
  const epsilon = anderson.epsilon ?? 1e-4;
  if (typeof epsilon !== 'number' || !Number.isFinite(epsilon) || epsilon < 0) {
    fail(
      fn,
      `'${prefix}anderson.epsilon' must be a finite number ≥ 0, got ${JSON.stringify(anderson.epsilon)}`,
    );
  }
  return { maxIterations, tolerance, criterion, memory, beta, epsilon };
}

/**
 * Anderson mixing weights for one batch item: α = H⁻¹1 / (1ᵀH⁻¹1) with
 * H = R + λI, λ = ε · mean(diag R), i.e. the minimiser of ‖Σ αᵢ rᵢ‖² + λ‖α‖² subject to
 * Σ αᵢ = 1 (the bordered system of the official solver, with a scale-relative ε). Gaussian
 * elimination with partial pivoting in float64; falls back to the plain step (all weight on
 * the newest iterate) when H is numerically singular.
 *
 * @param gram m×m Gram matrix R of the residuals, Rᵢⱼ = ⟨rᵢ, rⱼ⟩, oldest first.
 * @param epsilon relative regularisation ε ≥ 0.
 * @returns m weights summing to 1.
 */
export function andersonWeights(gram: readonly (readonly number[])[], epsilon: number): number[] {
  const n = gram.length;
  const plain = Array.from({ length: n }, (_, i) => (i === n - 1 ? 1 : 0));
  if (n === 1) return plain;
  const lambda = (epsilon * gram.reduce((s, row, i) => s + row[i]!, 0)) / n;
  const a = gram.map((row, i) => [...row.map((v, j) => (i === j ? v + lambda : v)), 1]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r]![c]!) > Math.abs(a[p]![c]!)) p = r;
    if (!(Math.abs(a[p]![c]!) > 1e-300)) return plain;
    if (p !== c) [a[p], a[c]] = [a[c]!, a[p]!];
    const pivot = a[c]!;
    for (let r = c + 1; r < n; r++) {
      const row = a[r]!;
      const m = row[c]! / pivot[c]!;
      if (m === 0) continue;
      for (let k = c; k <= n; k++) row[k]! -= m * pivot[k]!;
    }
  }
  const y = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    const row = a[r]!;
    let s = row[n]!;
    for (let k = r + 1; k < n; k++) s -= row[k]! * y[k]!;
    y[r] = s / row[r]!;
  }
  const total = y.reduce((p, q) => p + q, 0);
  if (!Number.isFinite(total) || Math.abs(total) < 1e-300) return plain;
  const alpha = y.map((v) => v / total);
  return alpha.every(Number.isFinite) ? alpha : plain;
}

/**
 * Solves the fixed-point equation x = fn(x) by Anderson-accelerated iteration (Walker & Ni
 * 2011; the solver of the official deformation inversion layer, after the DEQ tutorial of
 * Kolter, Duvenaud & Johnson):
 *
 *   fᵢ = fn(xᵢ), rᵢ = fᵢ − xᵢ;
 *   α = argmin ‖Σ αᵢ rᵢ‖² + λ‖α‖² subject to Σ αᵢ = 1 over the last m iterates (per batch
 *   item; λ = ε · mean ‖rᵢ‖², see {@link andersonWeights});
 *   x_{k+1} = β Σ αᵢ fᵢ + (1 − β) Σ αᵢ xᵢ,
 *
 * starting from x₀ (the first step is plain, x₁ = f₀). It stops after the first evaluation
 * whose residual is below `tolerance` or after `maxIterations` evaluations, and returns f(x_k)
 * of the last iterate. The residual reductions and the new row of the Gram matrix are read
 * back in one small `dataSync` per iteration; the m×m least-squares problems are solved on the
 * host in float64. 2m iterates the size of x₀ are stored (plus a few temporaries), whatever the
 * iteration count.
 *
 * Not differentiated through: the solution is a constant for tfjs gradients. Wrap it in an
 * implicit gradient (as {@link invertField} does) to differentiate a fixed point.
 *
 * @param fn the map, `[B, ...]` → `[B, ...]` (same shape); axis 0 is the batch axis, each batch
 *   item gets its own mixing weights. Called with tensors it must not dispose.
 * @param x0 `[B, ...]` initial iterate (not disposed).
 * @returns `{ solution, iterations, residual, converged }`.
 * @example
 * ```ts
 * // x = cos(x) elementwise
 * const { solution, iterations } = fixedPointSolve((x) => tf.cos(x), tf.zeros([1, 4]), { tolerance: 1e-6 });
 * ```
 */
export function fixedPointSolve(
  fn: (x: tf.Tensor) => tf.Tensor,
  x0: tf.Tensor,
  options: FixedPointOptions = {},
): FixedPointResult {
  const name = 'fixedPointSolve';
  if (typeof fn !== 'function') fail(name, `'fn' must be a function, got ${typeof fn}`);
  assertTensor(name, 'x0', x0);
  if (x0.rank < 1 || x0.size === 0) {
    fail(name, `'x0' must have a batch axis and at least one element, got ${fmtShape(x0.shape)}`);
  }
  if (x0.dtype !== 'float32') fail(name, `'x0' must be float32, got ${x0.dtype}`);
  const opts = resolveFixedPointOptions(name, options);
  return solveResolved(name, fn, x0, opts);
}

/** {@link fixedPointSolve} with validated options (used by the layers of this package). */
export function solveResolved(
  name: string,
  fn: (x: tf.Tensor) => tf.Tensor,
  x0: tf.Tensor,
  opts: ResolvedFixedPointOptions,
): FixedPointResult {
  const batch = x0.shape[0]!;
  const n = x0.size / batch;
  const accelerate = opts.memory > 1;
  const fs: tf.Tensor2D[] = []; // f(xᵢ), oldest first, [B, n]
  const rs: tf.Tensor2D[] = []; // rᵢ = f(xᵢ) − xᵢ
  const gram: number[][][] = Array.from({ length: batch }, () => []);
  let x: tf.Tensor = x0;
  const disposeX = () => {
    if (x !== x0) x.dispose();
  };
  try {
    for (let k = 1; ; k++) {
      const xk = x;
      const step = tf.tidy(() => {
        const fx = fn(xk);
        if (!(fx instanceof tf.Tensor)) {
          fail(name, `'fn' must return a tf.Tensor, got ${fx === null ? 'null' : typeof fx}`);
        }
        if (!tf.util.arraysEqual(fx.shape, xk.shape)) {
          fail(
            name,
            `'fn' must return the shape of its input ${fmtShape(xk.shape)}, got ${fmtShape(fx.shape)}`,
          );
        }
        const f = tf.reshape(fx, [batch, n]) as tf.Tensor2D;
        const r = tf.tidy(() => tf.sub(f, tf.reshape(xk, [batch, n]))) as tf.Tensor2D;
        // small reductions, each in its own scope so at most one temporary field is alive
        const parts: tf.Tensor[] = [];
        if (opts.criterion === 'maxAbs') {
          parts.push(tf.tidy(() => tf.reshape(tf.max(tf.abs(r)), [1])));
        } else {
          parts.push(tf.tidy(() => tf.reshape(tf.sum(tf.square(r)), [1])));
          parts.push(tf.tidy(() => tf.reshape(tf.sum(tf.square(f)), [1])));
        }
        if (accelerate) {
          for (const ri of rs) parts.push(tf.tidy(() => tf.sum(tf.mul(r, ri), 1)));
          parts.push(tf.tidy(() => tf.sum(tf.square(r), 1)));
        }
        return { f, r, stats: tf.concat(parts) };
      });
      const s = step.stats.dataSync();
      step.stats.dispose();
      const residual =
        opts.criterion === 'maxAbs' ? s[0]! : Math.sqrt(s[0]!) / (1e-5 + Math.sqrt(s[1]!));
      const converged = residual < opts.tolerance;
      if (converged || k >= opts.maxIterations || !Number.isFinite(residual)) {
        step.r.dispose();
        const solution = tf.reshape(step.f, x0.shape);
        step.f.dispose();
        return { solution, iterations: k, residual, converged };
      }
      // memory update
      const base = opts.criterion === 'maxAbs' ? 1 : 2;
      if (accelerate) {
        const old = rs.length;
        for (let b = 0; b < batch; b++) {
          const g = gram[b]!;
          const row: number[] = [];
          for (let i = 0; i < old; i++) {
            const d = s[base + i * batch + b]!;
            g[i]!.push(d);
            row.push(d);
          }
          row.push(s[base + old * batch + b]!);
          g.push(row);
        }
      }
      fs.push(step.f);
      rs.push(step.r);
      if (fs.length > opts.memory) {
        fs.shift()!.dispose();
        rs.shift()!.dispose();
        for (const g of gram) {
          g.shift();
          for (const row of g) row.shift();
        }
      }
      // next iterate
      let next: tf.Tensor;
      if (fs.length === 1) {
        next = tf.reshape(fs[0]!, x0.shape);
      } else {
        const alpha = gram.map((g) => andersonWeights(g, opts.epsilon));
        next = tf.tidy(() => tf.reshape(mix(fs, rs, alpha, opts.beta, n), x0.shape));
      }
      disposeX();
      x = next;
    }
  } finally {
    disposeX();
    for (const t of fs) t.dispose();
    for (const t of rs) t.dispose();
  }
}

/** Σ αᵢ (fᵢ − (1 − β) rᵢ) per batch row (= β Σ αᵢ fᵢ + (1 − β) Σ αᵢ xᵢ). */
function mix(
  fs: readonly tf.Tensor2D[],
  rs: readonly tf.Tensor2D[],
  alpha: readonly number[][],
  beta: number,
  n: number,
): tf.Tensor {
  const batch = alpha.length;
  // accumulates term by term, so at most three fields of temporaries are alive
  const combine = (pick: (t: tf.Tensor2D) => tf.Tensor, a: readonly number[]) => {
    const terms: Array<[tf.Tensor2D, number]> = [];
    fs.forEach((f, i) => {
      if (a[i] !== 0) terms.push([f, a[i]!]);
    });
    if (beta !== 1) {
      rs.forEach((r, i) => {
        if (a[i] !== 0) terms.push([r, -(1 - beta) * a[i]!]);
      });
    }
    let acc: tf.Tensor | null = null;
    for (const [t, w] of terms) {
      const prev: tf.Tensor | null = acc;
      acc = tf.tidy(() => (prev ? tf.add(prev, tf.mul(pick(t), w)) : tf.mul(pick(t), w)));
      prev?.dispose();
    }
    return acc ?? tf.zerosLike(pick(fs[0]!));
  };
  if (batch === 1) return combine((t) => t, alpha[0]!);
  // one row per batch item: scalar products stay on the fast (non-broadcasting) path
  const rows = alpha.map((a, b) => combine((t) => tf.slice(t, [b, 0], [1, n]), a));
  return tf.concat(rows, 0);
}
