/**
 * Evaluates a saved FIRE (default: the bundled weights) on the held-out ITK T1 → PD draws of
 * `diagnose.mjs` (moderate affine of strength `--affine`, deformation seeds not used in
 * training): NCC against the truth (before, affine alone, FIRE), % |J| ≤ 0, inverse
 * consistency and the CPU time per pair, mean ± SE over the draws. Then the error against a
 * known field: the undeformed T1 onto the PD deformed by a random B-spline (|u| ≤ 4 voxels,
 * 16-voxel spacing, the training deformations), mean |u − u_true| over the head (fixed >
 * 0.05) before (|u_true|) and after, with the NCC of the warped T1 against the T1 deformed
 * by u_true (and the paired difference after − before, mean ± SE over the draws): a field
 * can raise the NCC without matching the true correspondence.
 *
 *   node examples/fire/src/evaluate-weights.mjs [--weights DIR] [--draws 8] [--affine 0.2]
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { affineField, randomSmoothField, tf, warp } from '@regkit/core';
import { initExampleBackend } from '@regkit/example-common/backend';
import { disposePair } from '@regkit/example-common/slices';
import { meanAndSe, pm } from '@regkit/example-common/stats';
import { foldingPercent, inverseConsistencyError, ncc } from '@regkit/metrics';
import { BUNDLED_WEIGHTS, loadRegistrationNetwork } from '@regkit/networks';
import { DATASETS, testPairs } from './pairs.mjs';

const { values: args } = parseArgs({
  options: {
    weights: { type: 'string', default: fileURLToPath(BUNDLED_WEIGHTS.fire) },
    draws: { type: 'string', default: '8' },
    affine: { type: 'string', default: '0.2' },
  },
});
const backend = await initExampleBackend();
const net = await loadRegistrationNetwork(args.weights);
const size = net.metadata.inputShape;
const ds = await DATASETS(size[0]).itk();
const pairs = testPairs(ds, Number(args.draws), Number(args.affine));
const rows = [];
for (const p of pairs) {
  const t0 = performance.now();
  const o = net.model.apply(p.moving, p.fixed);
  await o.forward.data();
  const ms = performance.now() - t0;
  const aff = affineField(o.affine, size);
  const wa = warp(p.moving, aff);
  rows.push({
    before: await ncc(p.moving, p.movingTruth),
    affine: await ncc(wa, p.movingTruth),
    fire: await ncc(o.warped, p.movingTruth),
    folding: await foldingPercent(o.forward),
    ic: (await inverseConsistencyError(o.forward, o.inverse)).mean,
    ms,
  });
  tf.dispose([aff, wa, ...Object.values(o)]);
  disposePair(p);
}
const cell = (k, d = 3) => {
  const s = meanAndSe(rows.map((r) => r[k]));
  return pm(s.mean, s.se, { digits: d });
};
const ms = rows.map((r) => r.ms).sort((a, b) => a - b);
console.log(
  `${args.weights} (${backend}), ${rows.length} held-out draws, affine ${args.affine}: NCC before ${cell('before')}, FIRE-affine ${cell('affine')}, FIRE ${cell('fire')}; % |J| ≤ 0 ${cell('folding')}; inverse consistency ${cell('ic')} voxels; ${ms[ms.length >> 1].toFixed(0)} ms per pair (median, both directions)`,
);
const s = ds.slices.get(ds.test[0]);
const known = [];
for (let r = 0; r < Number(args.draws); r++) {
  const truth = randomSmoothField(size, {
    maxDisplacement: 4,
    controlSpacing: 16,
    seed: 100_001 + 2 * r,
  });
  const fixed = warp(s.fixed, truth);
  const mask = tf.tidy(() => tf.cast(tf.greater(tf.reshape(fixed, size), 0.05), 'float32'));
  const headMean = (t) =>
    tf.tidy(
      () =>
        tf.div(tf.sum(tf.mul(tf.sqrt(tf.sum(tf.square(t), -1)), mask)), tf.sum(mask)).dataSync()[0],
    );
  const o = net.model.apply(s.moving, fixed);
  const truthT1 = warp(s.moving, truth);
  const err = tf.sub(o.forward, truth);
  known.push({
    errorBefore: headMean(truth),
    errorAfter: headMean(err),
    errorChange: headMean(err) - headMean(truth),
    nccBefore: await ncc(s.moving, truthT1),
    nccAfter: await ncc(o.warped, truthT1),
  });
  tf.dispose([truth, fixed, mask, truthT1, err, ...Object.values(o)]);
}
const kcell = (k) => {
  const m = meanAndSe(known.map((r) => r[k]));
  return pm(m.mean, m.se, { digits: 3 });
};
console.log(
  `known field (T1 undeformed → PD deformed, ${known.length} draws): mean |u − u_true| in the head ${kcell('errorBefore')} → ${kcell('errorAfter')} voxels (paired difference ${kcell('errorChange')}); NCC to the truth ${kcell('nccBefore')} → ${kcell('nccAfter')}`,
);
net.dispose();
