import { tf } from '@regkit/core';
import { readDisplacementField, readNifti } from '@regkit/io';
import { dice, foldingPercent, hausdorff95, logJacobianStd } from '@regkit/metrics';
import { UsageError } from './errors.js';
import { disposeVolumes, readInput } from './files.js';

/** Options of the `eval` command. */
export interface EvalCommandOptions {
  fixedLabels: string;
  warpedLabels: string;
  field?: string;
  labels?: number[];
}

/** What `eval` reports. */
export interface EvalSummary {
  labels: number[];
  dice: number[];
  meanDice: number;
  hd95: number[];
  meanHd95: number;
  foldingPercent?: number;
  logJacobianStd?: number;
}

function mean(values: number[]): number {
  const finite = values.filter((v) => Number.isFinite(v));
  return finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : Number.NaN;
}

/**
 * `regkit eval`: Dice and HD95 (mm, MONAI convention) per label between two label maps on
 * one grid, and, with a field, its folding percentage and log-Jacobian standard deviation.
 */
export async function evalCommand(o: EvalCommandOptions): Promise<EvalSummary> {
  const a = await readInput('--fixed-labels', o.fixedLabels);
  const b = await readInput('--warped-labels', o.warpedLabels);
  try {
    if (!tf.util.arraysEqual(a.data.shape, b.data.shape)) {
      throw new UsageError(
        `--fixed-labels ${o.fixedLabels} [${a.data.shape.join(', ')}] and --warped-labels ${o.warpedLabels} [${b.data.shape.join(', ')}] are on different grids`,
      );
    }
    const labels = o.labels ?? (await presentLabels(a.data, b.data));
    const d = await dice(a.data, b.data, { labels });
    const h = await hausdorff95(a.data, b.data, { labels, spacing: a.spacing });
    const summary: EvalSummary = { labels, dice: d, meanDice: mean(d), hd95: h, meanHd95: mean(h) };
    if (o.field) {
      const grid = await readNifti(o.fixedLabels);
      try {
        const field = await readDisplacementField(o.field, grid);
        try {
          summary.foldingPercent = await foldingPercent(field);
          summary.logJacobianStd = await logJacobianStd(field);
        } finally {
          field.dispose();
        }
      } finally {
        disposeVolumes(grid);
      }
    }
    return summary;
  } finally {
    disposeVolumes(a, b);
  }
}

/** Non-zero labels present in any of the maps, ascending. */
export async function presentLabels(...maps: tf.Tensor[]): Promise<number[]> {
  const set = new Set<number>();
  for (const t of maps) {
    const v = await t.data();
    for (let i = 0; i < v.length; i++) if (v[i] !== 0) set.add(Math.round(v[i]!));
  }
  return [...set].sort((x, y) => x - y);
}
