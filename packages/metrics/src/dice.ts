import { assertImagePair, type tf } from '@regkit/core';
import { labelsPresent } from './labels.js';

/** Options of {@link dice}. */
export interface DiceOptions {
  /** Labels to score, in this order (default: every label present in either map, ascending, background included). */
  labels?: readonly number[];
}

/**
 * Dice overlap per label: 2|A ∩ B| / (|A| + |B|) with A = {a = l}, B = {b = l}.
 * A label absent from both maps gives NaN (undefined overlap; skipped by {@link meanDice});
 * absent from one map gives 0.
 *
 * @param a label map `[B, ...S, 1]` (integer values, any dtype).
 * @param b label map of the same shape.
 * @returns one value per label, in label order.
 */
export async function dice(
  a: tf.Tensor,
  b: tf.Tensor,
  options: DiceOptions = {},
): Promise<number[]> {
  assertImagePair('dice', a, b);
  const [va, vb] = await Promise.all([a.data(), b.data()]);
  const labels = options.labels ?? labelsPresent(va as ArrayLike<number>, vb as ArrayLike<number>);
  const index = new Map(labels.map((l, i) => [l, i]));
  const na = new Float64Array(labels.length);
  const nb = new Float64Array(labels.length);
  const both = new Float64Array(labels.length);
  for (let i = 0; i < va.length; i++) {
    const ia = index.get(va[i] as number);
    const ib = index.get(vb[i] as number);
    if (ia !== undefined) na[ia]!++;
    if (ib !== undefined) nb[ib]!++;
    if (ia !== undefined && ia === ib) both[ia]!++;
  }
  return labels.map((_, i) =>
    na[i]! + nb[i]! === 0 ? Number.NaN : (2 * both[i]!) / (na[i]! + nb[i]!),
  );
}

/** Options of {@link meanDice}. */
export interface MeanDiceOptions extends DiceOptions {
  /** Score label 0 too when `labels` is omitted (default false: foreground labels only). */
  includeBackground?: boolean;
}

/**
 * Mean Dice over labels (NaN entries — labels absent from both maps — are skipped; NaN if
 * nothing is left). Without `labels`, scores the labels present in either map, excluding 0
 * unless `includeBackground`.
 */
export async function meanDice(
  a: tf.Tensor,
  b: tf.Tensor,
  options: MeanDiceOptions = {},
): Promise<number> {
  let labels = options.labels;
  if (!labels) {
    assertImagePair('meanDice', a, b);
    const [va, vb] = await Promise.all([a.data(), b.data()]);
    labels = labelsPresent(va as ArrayLike<number>, vb as ArrayLike<number>).filter(
      (l) => options.includeBackground || l !== 0,
    );
  }
  const scores = (await dice(a, b, { labels })).filter((s) => !Number.isNaN(s));
  return scores.length === 0 ? Number.NaN : scores.reduce((p, q) => p + q, 0) / scores.length;
}
