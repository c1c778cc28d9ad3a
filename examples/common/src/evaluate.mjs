/**
 * Evaluation of a registration method on the held-out pairs of a slice dataset, and Markdown
 * tables, shared by the example apps.
 */
import { tf, warp } from '@regkit/core';
import {
  cycleConsistencyError,
  foldingPercent,
  hausdorff95,
  inverseConsistencyError,
  meanDice,
  ncc,
  ssim,
} from '@regkit/metrics';
import { disposePair, makePair } from './slices.mjs';

const mean = (a) => (a.length ? a.reduce((p, q) => p + q, 0) / a.length : Number.NaN);
const std = (a) => Math.sqrt(mean(a.map((v) => (v - mean(a)) ** 2)));

/** Mean and standard deviation of the finite values of `a`. */
export function summarise(a) {
  const finite = a.filter(Number.isFinite);
  return { mean: mean(finite), std: std(finite), n: finite.length };
}

/**
 * Registers every held-out pair of `dataset` (each test slice × `deformationsPerSlice` seeded
 * deformations) with `register(moving, fixed)` → `{ forward, inverse? }` (displacements, the
 * forward one warping moving onto fixed; tensors this function disposes), and returns the
 * per-pair metrics summarised:
 * - `dice`, `hd95` (voxels, mean over the labels present in both) when the dataset has labels;
 * - `ssim`, `ncc` of the warped moving image against the moving image deformed like the
 *   fixed one (the moving modality in the fixed frame);
 * - `folding` (% of |J| ≤ 0 of the forward field);
 * - `inverseConsistency` (mean |forward ∘ inverse − id| and |inverse ∘ forward − id|, voxels)
 *   when the method returns an inverse;
 * - `cycleConsistency` with `cycle: true`: the forward field of the swapped pair must be the
 *   inverse of this one: mean |forward(a, b) ∘ forward(b, a) − id| (voxels; includes the
 *   resampling error of the composition), and `swapError`, max |forward(b, a) − inverse(a, b)|,
 *   for methods that return an inverse;
 * - `ms`: median wall time of `register` (forward field read back), and `before` metrics of
 *   the identity.
 * `register = null` evaluates the identity.
 */
export async function evaluateMethod(
  dataset,
  register,
  { deformationsPerSlice = 3, seedBase = 100_000, cycle = false, hd95: withHd95 = true } = {},
) {
  const rows = [];
  for (const z of dataset.test) {
    for (let r = 0; r < deformationsPerSlice; r++) {
      const pair = makePair(dataset, z, seedBase + 10 * z + r);
      const row = {};
      let out = null;
      if (register) {
        const t0 = performance.now();
        out = await register(pair.moving, pair.fixed);
        await out.forward.data();
        row.ms = performance.now() - t0;
      }
      const field = out?.forward ?? tf.zeros([1, ...dataset.size, dataset.size.length]);
      const warped = warp(pair.moving, field);
      row.ssim = await ssim(warped, pair.movingTruth, { intensityRange: 1 });
      row.ncc = await ncc(warped, pair.movingTruth);
      if (pair.movingLabels) {
        const wl = warp(pair.movingLabels, field, { interpolation: 'nearest' });
        row.dice = await meanDice(wl, pair.fixedLabels);
        if (withHd95) row.hd95 = summarise(await hausdorff95(wl, pair.fixedLabels)).mean;
        wl.dispose();
      }
      row.folding = await foldingPercent(field);
      if (out?.inverse) {
        row.inverseConsistency = (await inverseConsistencyError(out.forward, out.inverse)).mean;
      }
      if (cycle && register) {
        const swapped = await register(pair.fixed, pair.moving);
        row.cycleConsistency = (
          await cycleConsistencyError(out.forward, swapped.forward)
        ).directions[0].mean;
        if (out.inverse) {
          // the swapped pair's forward field against this pair's inverse: 0 for a method
          // that is inverse consistent by construction (SITReg), up to float rounding
          const d = tf.tidy(() => tf.max(tf.abs(tf.sub(swapped.forward, out.inverse))));
          row.swapError = (await d.data())[0];
          d.dispose();
        }
        tf.dispose(Object.values(swapped).filter((t) => t instanceof tf.Tensor));
      }
      tf.dispose([warped, field]);
      if (out) tf.dispose(Object.values(out).filter((t) => t instanceof tf.Tensor));
      disposePair(pair);
      rows.push(row);
    }
  }
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const result = { pairs: rows.length };
  for (const k of keys) result[k] = summarise(rows.map((r) => r[k] ?? Number.NaN));
  if (result.ms) {
    const ms = rows.map((r) => r.ms).sort((a, b) => a - b);
    result.ms.median = ms[Math.floor(ms.length / 2)];
  }
  return result;
}

/** `mean (std)` of a summary, scaled (e.g. 100 for percentages), or an empty cell. */
export function cell(summary, { scale = 1, digits = 1, withStd = true } = {}) {
  if (!summary || !Number.isFinite(summary.mean)) return '';
  const m = (summary.mean * scale).toFixed(digits);
  return withStd ? `${m} (${(summary.std * scale).toFixed(digits)})` : m;
}

/** A Markdown table from a header row and rows of cells (`|` in cells escaped). */
export function markdownTable(header, rows) {
  const esc = (c) => String(c).replaceAll('|', '\\|');
  return [
    `| ${header.map(esc).join(' | ')} |`,
    `|${header.map(() => '---').join('|')}|`,
    ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ].join('\n');
}
