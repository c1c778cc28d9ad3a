/**
 * Summary statistics of the example protocol: mean ± standard error over repeated runs
 * (seeds) and test pairs, and paired differences against a baseline evaluated on the same
 * seeds and pairs. Plain numbers (no tensors); non-finite values are left out.
 */

/**
 * Mean, sample standard deviation (n − 1) and standard error sd/√n of the finite values.
 *
 * @param {number[]} values
 * @returns {{ mean: number, sd: number, se: number, n: number }} NaN where undefined
 *   (mean of no value; sd and se of fewer than two).
 */
export function meanAndSe(values) {
  const v = values.filter(Number.isFinite);
  const n = v.length;
  const mean = n ? v.reduce((p, q) => p + q, 0) / n : Number.NaN;
  const sd = n > 1 ? Math.sqrt(v.reduce((p, q) => p + (q - mean) ** 2, 0) / (n - 1)) : Number.NaN;
  return { mean, sd, se: sd / Math.sqrt(n), n };
}

/**
 * Paired difference d_i = a_i − b_i over the indices where both are finite: its mean, its
 * standard error sd(d)/√n and the paired t statistic mean/se (scipy's `ttest_rel(a, b)`).
 *
 * @param {number[]} a the method's values.
 * @param {number[]} b the baseline's values, same length and order (same pairs).
 * @returns {{ mean: number, sd: number, se: number, n: number, t: number }}
 */
export function pairedDifference(a, b) {
  if (a.length !== b.length) {
    throw new Error(
      `pairedDifference: 'a' has ${a.length} values, 'b' ${b.length}; they must pair up`,
    );
  }
  const d = [];
  for (let i = 0; i < a.length; i++) {
    if (Number.isFinite(a[i]) && Number.isFinite(b[i])) d.push(a[i] - b[i]);
  }
  const s = meanAndSe(d);
  return { ...s, t: s.mean / s.se };
}

/**
 * Summary of one metric of an arm trained with several seeds and evaluated on the same test
 * pairs: `values[s][p]` is the value of seed s on pair p.
 * - `mean`: the grand mean over seeds and pairs (mean of the per-seed means);
 * - `seSeeds`: standard error over the per-seed means (run-to-run noise, n = seeds);
 * - `sePairs`: standard error over the pairs of the per-pair means over seeds (test-set
 *   sampling, n = pairs).
 *
 * @param {number[][]} values `[seeds][pairs]`.
 */
export function summariseRuns(values) {
  const perSeed = values.map((row) => meanAndSe(row).mean);
  const perPair = pairMeans(values);
  const bySeed = meanAndSe(perSeed);
  return {
    mean: bySeed.mean,
    seSeeds: bySeed.se,
    sePairs: meanAndSe(perPair).se,
    seeds: bySeed.n,
    pairs: perPair.filter(Number.isFinite).length,
  };
}

/**
 * Paired difference of an arm against the baseline, both `[seeds][pairs]` on the same seeds
 * (index) and pairs: `seeds` is {@link pairedDifference} of the per-seed means (n = seeds),
 * `pairs` that of the per-pair means over seeds (n = pairs).
 *
 * @param {number[][]} arm
 * @param {number[][]} baseline
 */
export function pairedRuns(arm, baseline) {
  if (arm.length !== baseline.length) {
    throw new Error(
      `pairedRuns: ${arm.length} seeds against ${baseline.length}; they must pair up`,
    );
  }
  // per seed: the mean of the paired differences over the pairs both have
  const perSeedArm = [];
  const perSeedBase = [];
  for (let s = 0; s < arm.length; s++) {
    const d = pairedDifference(arm[s], baseline[s]);
    perSeedArm.push(d.mean);
    perSeedBase.push(0);
  }
  return {
    seeds: pairedDifference(perSeedArm, perSeedBase),
    pairs: pairedDifference(pairMeans(arm), pairMeans(baseline)),
  };
}

/** Per-pair means over seeds of `[seeds][pairs]` values (finite ones). */
function pairMeans(values) {
  const pairs = Math.max(0, ...values.map((r) => r.length));
  return Array.from({ length: pairs }, (_, p) => meanAndSe(values.map((r) => r[p])).mean);
}

/** `mean ± se` scaled (e.g. 100 for Dice in %), or '' when the mean is not finite. */
export function pm(mean, se, { scale = 1, digits = 1 } = {}) {
  if (!Number.isFinite(mean)) return '';
  const m = (mean * scale).toFixed(digits);
  return Number.isFinite(se) ? `${m} ± ${(se * scale).toFixed(digits)}` : m;
}
