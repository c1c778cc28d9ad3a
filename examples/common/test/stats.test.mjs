/**
 * examples/common/src/stats.mjs against numpy/scipy (test/fixtures/make_stats_fixtures.py →
 * stats_fixtures.json: mean, sd, scipy.stats.sem, ttest_rel / ttest_1samp statistics), and
 * its error path. Run: node --test test/ (from examples/common).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { meanAndSe, pairedDifference, pairedRuns, pm, summariseRuns } from '../src/stats.mjs';

const { cases } = JSON.parse(
  readFileSync(new URL('./fixtures/stats_fixtures.json', import.meta.url), 'utf8'),
);
const nan = (rows) => rows.map((v) => (Array.isArray(v) ? nan(v) : (v ?? Number.NaN)));
const close = (got, want, what) =>
  assert.ok(
    Math.abs(got - want) <= 1e-12 + 1e-9 * Math.abs(want),
    `${what}: got ${got}, want ${want}`,
  );

describe('stats against numpy/scipy', () => {
  for (const [i, c] of cases.filter((x) => x.kind === 'vectors').entries()) {
    it(`meanAndSe and pairedDifference, vector case ${i} (n = ${c.a.length})`, () => {
      const a = nan(c.a);
      const b = nan(c.b);
      const s = meanAndSe(a);
      for (const k of ['mean', 'sd', 'se', 'n']) close(s[k], c.summaryA[k], `summary ${k}`);
      const d = pairedDifference(a, b);
      for (const k of ['mean', 'sd', 'se', 'n', 't']) close(d[k], c.paired[k], `paired ${k}`);
    });
  }
  for (const [i, c] of cases.filter((x) => x.kind === 'runs').entries()) {
    it(`summariseRuns and pairedRuns, runs case ${i} (${c.arm.length} seeds)`, () => {
      const arm = nan(c.arm);
      const base = nan(c.baseline);
      const s = summariseRuns(arm);
      for (const k of ['mean', 'seSeeds', 'sePairs']) close(s[k], c.summaryArm[k], k);
      const p = pairedRuns(arm, base);
      for (const k of ['mean', 'se', 't']) close(p.seeds[k], c.pairedSeeds[k], `seeds ${k}`);
      for (const k of ['mean', 'se', 'n', 't']) close(p.pairs[k], c.pairedPairs[k], `pairs ${k}`);
    });
  }
  it('rejects unpaired inputs and formats mean ± se', () => {
    assert.throws(() => pairedDifference([1, 2], [1]), /pairedDifference: 'a' has 2 values, 'b' 1/);
    assert.throws(() => pairedRuns([[1]], [[1], [2]]), /pairedRuns: 1 seeds against 2/);
    assert.equal(pm(0.7654, 0.0123, { scale: 100 }), '76.5 ± 1.2');
    assert.equal(pm(Number.NaN, 1), '');
    assert.ok(Number.isNaN(meanAndSe([3]).se));
  });
});
