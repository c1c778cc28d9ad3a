/**
 * Fused plain-JavaScript local NCC for the tfjs `cpu` and `wasm` backends: the loss and,
 * optionally, its closed-form gradient, in one streaming pass over the depth slices.
 *
 * With zero-padded box sums S_a, S_b, S_aa, S_bb, S_ab over a window of n voxels,
 *   X = S_ab − S_a S_b / n,  V_a = S_aa − S_a² / n,  V_b = S_bb − S_b² / n,
 *   cc = X² / (V_a V_b + ε),  loss = −mean(cc)
 * (ncc.ts's cross, var_a, var_b simplified: S_ab − ū S_a − ā S_b + ā ū n = S_ab − S_a S_b / n),
 *   α = ∂cc/∂S_ab = 2X / (V_a V_b + ε),  β = ∂cc/∂S_aa = −cc V_b / (V_a V_b + ε),
 *   γ = ∂cc/∂S_bb = −cc V_a / (V_a V_b + ε),
 *   ∂cc/∂S_a = −(α S_b + 2β S_a) / n,  ∂cc/∂S_b = −(α S_a + 2γ S_b) / n.
 * The adjoint of a zero-padded box sum is the box sum over the mirrored window, i.e. itself
 * for the centred odd windows used here; so with B(·) the box sum of a coefficient map and
 * g = −1 / (number of elements):
 *   ∂loss/∂a = g (B(∂cc/∂S_a) + 2a B(β) + b B(α)),
 *   ∂loss/∂b = g (B(∂cc/∂S_b) + 2b B(γ) + a B(α)).
 *
 * All sums are float64. Per batch item and depth slice z, running depth sums of the five
 * maps [a, b, a², b², ab] are updated straight from the inputs (add slice z + r_D, drop
 * slice z − r_D − 1), then running sums along H and W, row by row, give the box sums and
 * cc. For the gradient, slice z's five coefficient maps go into a ring of the last
 * 2 r_D + 1 slices and into their running depth sum, from which slice z − r_D's gradient
 * rows follow by the same H and W sums. Working memory: (2 r_D + 3) · 5 · H·W·C float64
 * values (5 MB at 96×112×96, window 9), kept for the next call with the same slice shape.
 */
import {
  type KernelBackendLike,
  RegkitLocalNcc,
  type RegkitLocalNccAttrs,
  runFloatKernel,
  tf,
} from '@regkit/core';

const EPS = 1e-5;
/** Number of stacked maps: [a, b, a², b², ab] forward, the five gradient coefficients backward. */
const MAPS = 5;

/** Reusable float64 buffers of one slice shape. */
interface Workspace {
  key: string;
  /** depth sums of the current slice's five maps, `[MAPS, H, W·C]` */
  acc1: Float64Array;
  /** depth sums of the gradient coefficients, `[MAPS, H, W·C]` */
  acc2: Float64Array;
  /** the last `slots` slices of gradient coefficients, each `[MAPS, H, W·C]` */
  ring: Float64Array[];
  /** box sums along H of one row, `[MAPS, W·C]` */
  hrow: Float64Array;
  /** box sums along H and W of one row, `[MAPS, W·C]` */
  wrow: Float64Array;
}

/** The last workspace, reused while the slice shape stays the same. */
let cached: Workspace | undefined;

function workspace(P: number, WC: number, slots: number): Workspace {
  const key = `${P}/${WC}`;
  if (cached?.key !== key) {
    cached = undefined; // let the old buffers go before allocating
    cached = {
      key,
      acc1: new Float64Array(MAPS * P),
      acc2: new Float64Array(MAPS * P),
      ring: [],
      hrow: new Float64Array(MAPS * WC),
      wrow: new Float64Array(MAPS * WC),
    };
  }
  while (cached.ring.length < slots) cached.ring.push(new Float64Array(MAPS * P));
  return cached;
}

/**
 * Depth step of the five maps [a, b, a², b², ab] into `acc` (`[MAPS, P]`): adds input
 * slice `add` and subtracts input slice `sub` (element offsets into `a` and `b`, −1 for
 * none); with `set`, `acc` becomes slice `add` (a window of 1 along depth).
 */
function depthStep(
  acc: Float64Array,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  add: number,
  sub: number,
  P: number,
  set: boolean,
): void {
  const P2 = 2 * P;
  const P3 = 3 * P;
  const P4 = 4 * P;
  if (set) {
    for (let j = 0; j < P; j++) {
      const x = a[add + j]!;
      const y = b[add + j]!;
      acc[j] = x;
      acc[P + j] = y;
      acc[P2 + j] = x * x;
      acc[P3 + j] = y * y;
      acc[P4 + j] = x * y;
    }
  } else if (add >= 0 && sub >= 0) {
    for (let j = 0; j < P; j++) {
      const x = a[add + j]!;
      const y = b[add + j]!;
      const u = a[sub + j]!;
      const v = b[sub + j]!;
      acc[j] = acc[j]! + (x - u);
      acc[P + j] = acc[P + j]! + (y - v);
      acc[P2 + j] = acc[P2 + j]! + (x * x - u * u);
      acc[P3 + j] = acc[P3 + j]! + (y * y - v * v);
      acc[P4 + j] = acc[P4 + j]! + (x * y - u * v);
    }
  } else if (add >= 0) {
    for (let j = 0; j < P; j++) {
      const x = a[add + j]!;
      const y = b[add + j]!;
      acc[j] = acc[j]! + x;
      acc[P + j] = acc[P + j]! + y;
      acc[P2 + j] = acc[P2 + j]! + x * x;
      acc[P3 + j] = acc[P3 + j]! + y * y;
      acc[P4 + j] = acc[P4 + j]! + x * y;
    }
  } else if (sub >= 0) {
    for (let j = 0; j < P; j++) {
      const u = a[sub + j]!;
      const v = b[sub + j]!;
      acc[j] = acc[j]! - u;
      acc[P + j] = acc[P + j]! - v;
      acc[P2 + j] = acc[P2 + j]! - u * u;
      acc[P3 + j] = acc[P3 + j]! - v * v;
      acc[P4 + j] = acc[P4 + j]! - u * v;
    }
  }
}

/**
 * Box sums along H (radius `rH`) of row `h` of the `MAPS` stacked `[H, W·C]` planes of
 * `src` into `hrow` (`[MAPS, W·C]`), which must hold those of row h − 1 when h > 0.
 */
function hStep(
  src: Float64Array,
  hrow: Float64Array,
  h: number,
  H: number,
  WC: number,
  rH: number,
): void {
  // the five maps in one loop: about twice as fast as a loop per map on V8
  const P = H * WC;
  const P2 = 2 * P;
  const P3 = 3 * P;
  const P4 = 4 * P;
  const WC2 = 2 * WC;
  const WC3 = 3 * WC;
  const WC4 = 4 * WC;
  if (rH === 0 || h === 0) {
    const q = h * WC;
    for (let j = 0; j < WC; j++) {
      hrow[j] = src[q + j]!;
      hrow[WC + j] = src[P + q + j]!;
      hrow[WC2 + j] = src[P2 + q + j]!;
      hrow[WC3 + j] = src[P3 + q + j]!;
      hrow[WC4 + j] = src[P4 + q + j]!;
    }
    for (let k = h + 1; k <= Math.min(h + rH, H - 1); k++) addRow(src, hrow, k * WC, WC, P, 1);
    return;
  }
  const add = h + rH < H ? (h + rH) * WC : -1;
  const sub = h - rH - 1 >= 0 ? (h - rH - 1) * WC : -1;
  if (add >= 0 && sub >= 0) {
    for (let j = 0; j < WC; j++) {
      const pa = add + j;
      const ps = sub + j;
      hrow[j] = hrow[j]! + (src[pa]! - src[ps]!);
      hrow[WC + j] = hrow[WC + j]! + (src[P + pa]! - src[P + ps]!);
      hrow[WC2 + j] = hrow[WC2 + j]! + (src[P2 + pa]! - src[P2 + ps]!);
      hrow[WC3 + j] = hrow[WC3 + j]! + (src[P3 + pa]! - src[P3 + ps]!);
      hrow[WC4 + j] = hrow[WC4 + j]! + (src[P4 + pa]! - src[P4 + ps]!);
    }
  } else if (add >= 0) addRow(src, hrow, add, WC, P, 1);
  else if (sub >= 0) addRow(src, hrow, sub, WC, P, -1);
}

/** hrow += sign · (row at element `q` of each of the `MAPS` planes of `src`). */
function addRow(
  src: Float64Array,
  hrow: Float64Array,
  q: number,
  WC: number,
  P: number,
  sign: number,
): void {
  const P2 = 2 * P;
  const P3 = 3 * P;
  const P4 = 4 * P;
  const WC2 = 2 * WC;
  const WC3 = 3 * WC;
  const WC4 = 4 * WC;
  for (let j = 0; j < WC; j++) {
    const k = q + j;
    hrow[j] = hrow[j]! + sign * src[k]!;
    hrow[WC + j] = hrow[WC + j]! + sign * src[P + k]!;
    hrow[WC2 + j] = hrow[WC2 + j]! + sign * src[P2 + k]!;
    hrow[WC3 + j] = hrow[WC3 + j]! + sign * src[P3 + k]!;
    hrow[WC4 + j] = hrow[WC4 + j]! + sign * src[P4 + k]!;
  }
}

/**
 * Box sums along W (radius `rW`, per channel) of the `MAPS` stacked `[W, C]` rows of
 * `hrow` into `wrow`: five running sums per channel.
 */
function wStep(hrow: Float64Array, wrow: Float64Array, W: number, C: number, rW: number): void {
  const WC = W * C;
  if (rW === 0) {
    wrow.set(hrow);
    return;
  }
  const WC2 = 2 * WC;
  const WC3 = 3 * WC;
  const WC4 = 4 * WC;
  const head = Math.min(rW, W - 1);
  const noSub = Math.min(W, rW + 1); // i < noSub: nothing leaves the window
  const both = W - rW; // i < both: something enters the window
  for (let c = 0; c < C; c++) {
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    let s4 = 0;
    for (let i = 0; i <= head; i++) {
      const k = c + i * C;
      s0 += hrow[k]!;
      s1 += hrow[k + WC]!;
      s2 += hrow[k + WC2]!;
      s3 += hrow[k + WC3]!;
      s4 += hrow[k + WC4]!;
    }
    wrow[c] = s0;
    wrow[c + WC] = s1;
    wrow[c + WC2] = s2;
    wrow[c + WC3] = s3;
    wrow[c + WC4] = s4;
    let i = 1;
    for (; i < noSub; i++) {
      if (i + rW < W) {
        const k = c + (i + rW) * C;
        s0 += hrow[k]!;
        s1 += hrow[k + WC]!;
        s2 += hrow[k + WC2]!;
        s3 += hrow[k + WC3]!;
        s4 += hrow[k + WC4]!;
      }
      const o = c + i * C;
      wrow[o] = s0;
      wrow[o + WC] = s1;
      wrow[o + WC2] = s2;
      wrow[o + WC3] = s3;
      wrow[o + WC4] = s4;
    }
    for (; i < both; i++) {
      const k = c + (i + rW) * C;
      const q = c + (i - rW - 1) * C;
      s0 += hrow[k]! - hrow[q]!;
      s1 += hrow[k + WC]! - hrow[q + WC]!;
      s2 += hrow[k + WC2]! - hrow[q + WC2]!;
      s3 += hrow[k + WC3]! - hrow[q + WC3]!;
      s4 += hrow[k + WC4]! - hrow[q + WC4]!;
      const o = c + i * C;
      wrow[o] = s0;
      wrow[o + WC] = s1;
      wrow[o + WC2] = s2;
      wrow[o + WC3] = s3;
      wrow[o + WC4] = s4;
    }
    for (; i < W; i++) {
      const q = c + (i - rW - 1) * C;
      s0 -= hrow[q]!;
      s1 -= hrow[q + WC]!;
      s2 -= hrow[q + WC2]!;
      s3 -= hrow[q + WC3]!;
      s4 -= hrow[q + WC4]!;
      const o = c + i * C;
      wrow[o] = s0;
      wrow[o + WC] = s1;
      wrow[o + WC2] = s2;
      wrow[o + WC3] = s3;
      wrow[o + WC4] = s4;
    }
  }
}

/** Σ cc over one row of box sums `S` = `[S_a, S_b, S_aa, S_bb, S_ab]`, each `[WC]`. */
function lossRow(S: Float64Array, WC: number, invN: number): number {
  const WC2 = 2 * WC;
  const WC3 = 3 * WC;
  const WC4 = 4 * WC;
  let sum = 0;
  for (let j = 0; j < WC; j++) {
    const sa = S[j]!;
    const sb = S[WC + j]!;
    const cross = S[WC4 + j]! - sa * sb * invN;
    const va = S[WC2 + j]! - sa * sa * invN;
    const vb = S[WC3 + j]! - sb * sb * invN;
    sum += (cross * cross) / (va * vb + EPS);
  }
  return sum;
}

/**
 * Σ cc over one row of box sums `S`, writing that row's gradient coefficients
 * g·[α, β, γ, ∂cc/∂S_a, ∂cc/∂S_b] to `slot` at element `o` (of `[MAPS, P]`) and adding
 * them to the depth sums `acc2`, minus what `slot` held there (an older slice, or zeros).
 */
function coefficientRow(
  S: Float64Array,
  WC: number,
  invN: number,
  g: number,
  acc2: Float64Array,
  slot: Float64Array,
  o: number,
  P: number,
): number {
  const WC2 = 2 * WC;
  const WC3 = 3 * WC;
  const WC4 = 4 * WC;
  const gn = -g * invN;
  let sum = 0;
  for (let j = 0; j < WC; j++) {
    const sa = S[j]!;
    const sb = S[WC + j]!;
    const cross = S[WC4 + j]! - sa * sb * invN;
    const va = S[WC2 + j]! - sa * sa * invN;
    const vb = S[WC3 + j]! - sb * sb * invN;
    const den = 1 / (va * vb + EPS);
    const cc = cross * cross * den;
    sum += cc;
    const alpha = 2 * cross * den;
    const beta = -cc * vb * den;
    const gamma = -cc * va * den;
    const c0 = g * alpha;
    const c1 = g * beta;
    const c2 = g * gamma;
    const c3 = gn * (alpha * sb + 2 * beta * sa);
    const c4 = gn * (alpha * sa + 2 * gamma * sb);
    const k0 = o + j;
    const k1 = k0 + P;
    const k2 = k1 + P;
    const k3 = k2 + P;
    const k4 = k3 + P;
    acc2[k0] = acc2[k0]! + (c0 - slot[k0]!);
    acc2[k1] = acc2[k1]! + (c1 - slot[k1]!);
    acc2[k2] = acc2[k2]! + (c2 - slot[k2]!);
    acc2[k3] = acc2[k3]! + (c3 - slot[k3]!);
    acc2[k4] = acc2[k4]! + (c4 - slot[k4]!);
    slot[k0] = c0;
    slot[k1] = c1;
    slot[k2] = c2;
    slot[k3] = c3;
    slot[k4] = c4;
  }
  return sum;
}

/**
 * One row of the gradients at element `o` of `a`, `b`, `da`, `db` from the box sums `T`
 * of g·[α, β, γ, ∂cc/∂S_a, ∂cc/∂S_b]:
 * da = T₃ + 2a T₁ + b T₀, db = T₄ + 2b T₂ + a T₀.
 */
function gradientRow(
  T: Float64Array,
  WC: number,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  da: Float32Array,
  db: Float32Array,
  o: number,
): void {
  const WC2 = 2 * WC;
  const WC3 = 3 * WC;
  const WC4 = 4 * WC;
  for (let j = 0; j < WC; j++) {
    const x = a[o + j]!;
    const y = b[o + j]!;
    const t0 = T[j]!;
    da[o + j] = T[WC3 + j]! + 2 * x * T[WC + j]! + y * t0;
    db[o + j] = T[WC4 + j]! + 2 * y * T[WC2 + j]! + x * t0;
  }
}

/**
 * Local NCC loss of `a` and `b` (`[B, ...S, C]`, S 2D or 3D, `window` odd per spatial
 * axis); with `da` and `db` (same size as `a`) also writes the loss's gradients there.
 *
 * Per batch item and depth slice z: running depth sums of [a, b, a², b², ab] (straight
 * from the inputs), then box sums along H and W row by row give cc. With gradients, the
 * coefficients of slice z go to a ring of the last 2 r_D + 1 slices and into their running
 * depth sum; once slice z − r_D has all its depth neighbours, its gradient rows come from
 * the H and W box sums of that sum.
 *
 * @returns the loss, −mean(cc).
 */
export function localNccJs(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  shape: readonly number[],
  window: readonly number[],
  da?: Float32Array,
  db?: Float32Array,
): number {
  const nd = shape.length - 2;
  const B = shape[0]!;
  const C = shape[nd + 1]!;
  const D = nd === 3 ? shape[1]! : 1;
  const H = shape[nd - 1]!;
  const W = shape[nd]!;
  const rD = nd === 3 ? (window[0]! - 1) / 2 : 0;
  const rH = (window[nd - 2]! - 1) / 2;
  const rW = (window[nd - 1]! - 1) / 2;
  const invN = 1 / window.reduce((p, q) => p * q, 1);
  const WC = W * C;
  const P = H * WC;
  const total = B * D * P;
  if (total === 0) return Number.NaN;
  const withGrad = da !== undefined && db !== undefined;
  const slots = withGrad ? Math.min(2 * rD + 1, D) : 0;
  const { acc1, acc2, ring, hrow, wrow } = workspace(P, WC, slots);
  const g = -1 / total;
  let sum = 0;

  // H and W box sums of the [MAPS, P] plane `src`, row by row, into wrow
  const rows = (src: Float64Array, h: number) => {
    hStep(src, hrow, h, H, WC, rH);
    wStep(hrow, wrow, W, C, rW);
  };
  const gradientSlice = (off: number) => {
    for (let h = 0; h < H; h++) {
      rows(acc2, h);
      gradientRow(wrow, WC, a, b, da!, db!, off + h * WC);
    }
  };

  for (let bi = 0; bi < B; bi++) {
    const off = bi * D * P;
    if (rD > 0) {
      // acc1 = Σ of slices [0, r_D − 1]; step z adds z + r_D and drops z − r_D − 1
      acc1.fill(0);
      for (let k = 0; k < Math.min(rD, D); k++) depthStep(acc1, a, b, off + k * P, -1, P, false);
    }
    if (withGrad) acc2.fill(0);
    for (let z = 0; z < D; z++) {
      const add = z + rD < D ? off + (z + rD) * P : -1;
      const sub = z - rD - 1 >= 0 ? off + (z - rD - 1) * P : -1;
      depthStep(acc1, a, b, add, sub, P, rD === 0);
      if (!withGrad) {
        for (let h = 0; h < H; h++) {
          rows(acc1, h);
          sum += lossRow(wrow, WC, invN);
        }
        continue;
      }
      // the slot holds slice z − (2 r_D + 1), to drop from acc2, if there is one
      const slot = ring[z % slots]!;
      if (z < slots) slot.fill(0);
      for (let h = 0; h < H; h++) {
        rows(acc1, h);
        sum += coefficientRow(wrow, WC, invN, g, acc2, slot, h * WC, P);
      }
      // acc2 now sums the coefficients of slices [z − 2 r_D, z]: slice z − r_D is complete
      if (z >= rD) gradientSlice(off + (z - rD) * P);
    }
    if (!withGrad) continue;
    for (let e = Math.max(0, D - rD); e < D; e++) {
      const drop = e - rD - 1;
      if (drop >= 0) {
        const s = ring[drop % slots]!;
        for (let j = 0; j < MAPS * P; j++) acc2[j] = acc2[j]! - s[j]!;
      }
      gradientSlice(off + e * P);
    }
  }
  return -sum / total;
}

/** `RegkitLocalNcc` for the `cpu` or `wasm` backend. */
export function localNccKernel(backendName: string): tf.KernelConfig {
  return {
    kernelName: RegkitLocalNcc,
    backendName,
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { a, b } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
      const { window, withGrad } = attrs as unknown as RegkitLocalNccAttrs;
      const shape = [...a.shape];
      const outShapes = withGrad ? [[], shape, shape] : [[]];
      return runFloatKernel(
        backend as KernelBackendLike,
        [a, b],
        outShapes,
        ([av, bv], [loss, da, db]) => {
          loss![0] = localNccJs(av!, bv!, shape, window, da, db);
        },
      );
    },
  };
}

let registered = false;

/** Registers `RegkitLocalNcc` for cpu and wasm (once; keeps any kernel registered before). */
export function registerLocalNccKernels(): void {
  if (registered) return;
  registered = true;
  for (const backendName of ['cpu', 'wasm']) {
    if (!tf.getKernel(RegkitLocalNcc, backendName)) tf.registerKernel(localNccKernel(backendName));
  }
}
