#!/usr/bin/env node
/**
 * The CPU cost of examples/mix's full protocol, measured rather than guessed: for every arm,
 * the process CPU time (user + system, all threads: `process.cpuUsage`) of `3·n` training
 * steps minus that of `n`, over `2·n` (so set-up cancels; after one uncounted training of `n`
 * steps that warms the arm's kernels up) at the protocol's size, the cost of one
 * registration of a test pair (inference), of the MINE warm start per step, and of one
 * `registerImages` call per instance-optimisation arm; then the full protocol's total:
 * per trained arm 5 trainings (3 grid values on seed 1 + 2 more seeds) × steps, plus MINE's
 * warm starts, plus (3 · validation + 3 · test) registrations; per IO arm
 * 3 · validation + test registrations. CPU seconds do not depend on the machine's load (up to
 * cache effects); on an idle machine with one core or more they bound the wall time.
 *
 *   node src/step-cost.mjs [--size 96] [--steps 5] [--arms sitreg-lncc,…]
 */
import { parseArgs } from 'node:util';
import { tf } from '@regkit/core';
import { initExampleBackend } from '@regkit/example-common/backend';
import {
  bratsProtocolDataset,
  evaluatePairs,
  protocolSettings,
  protocolTrainingPair,
} from '@regkit/example-common/protocol';
import { loadMasrNet } from '@regkit/networks';
import { ARMS, IO_COMMON, warmStartedMine } from './combinations.mjs';

const { values: args } = parseArgs({
  options: {
    size: { type: 'string', default: '96' },
    steps: { type: 'string', default: '5' },
    arms: { type: 'string', default: Object.keys(ARMS).join(',') },
    'full-steps': { type: 'string', default: '600' },
    'full-fire-steps': { type: 'string', default: '300' },
    'full-warm-steps': { type: 'string', default: '1000' },
  },
});
const n = Number(args.steps);
if (!(Number.isInteger(n) && n >= 5 && n % 5 === 0)) {
  console.error(`--steps must be a multiple of 5, got '${args.steps}'`);
  process.exit(2);
}
const backend = await initExampleBackend();
const size = [Number(args.size), Number(args.size)];
const full = protocolSettings({ size: args.size });
const dataset = await bratsProtocolDataset('t2f_flair', size);
if (!dataset) {
  console.log('the read-only BraTS case was not found (set REGKIT_BRATS_DIR)');
  process.exit(0);
}
const { model: masr } = await loadMasrNet();
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const validationPairs = dataset.validation.length * full.validationDeformations;
const testPairs = dataset.test.length * full.deformations;
console.log(
  `backend ${backend}, ${size.join('×')}; full protocol: ${validationPairs} validation and ${testPairs} test pairs, ${args['full-steps']} steps (FIRE ${args['full-fire-steps']}), MINE warm start ${args['full-warm-steps']}`,
);

const warmData = (i) => protocolTrainingPair(dataset, 51, i);
/** CPU seconds of `f()` (awaited). */
const measure = async (f) => {
  const c0 = cpu();
  const r = await f();
  return { seconds: cpu() - c0, result: r };
};
// one throwaway training so that the wasm module and kernels are warm
await (
  await ARMS['vxm-mi'].build({
    value: 1,
    seed: 9,
    data: (e, s) => protocolTrainingPair(dataset, 9, e * 5 + s),
    epochs: 1,
    stepsPerEpoch: 5,
    masr,
  })
).dispose();

let total = 0;
const lines = [];
for (const name of args.arms.split(',')) {
  const spec = ARMS[name];
  if (!spec) throw new Error(`unknown arm '${name}'`);
  const isIo = spec.group === 'io';
  const common = {
    value: spec.grid.check[0],
    seed: 1,
    data: (e, s) => protocolTrainingPair(dataset, 1, e * 5 + s),
    stepsPerEpoch: 5,
    masr,
    warmSteps: 0,
    warmData,
    size,
  };
  if (isIo) {
    const arm = await spec.build({ ...common, iterations: IO_COMMON.iterations });
    const pair = { slices: dataset.validation.slice(0, 2), deformations: 1, seedBase: 300_000 };
    const { seconds } = await measure(() => evaluatePairs(dataset, arm.register, pair));
    const perPair = seconds / 2;
    const registrations = 3 * validationPairs + testPairs;
    const armTotal = registrations * perPair;
    total += armTotal;
    lines.push(
      `| ${name} | – | ${perPair.toFixed(2)} s per registerImages (100/80/50) | ${registrations} registrations | ${(armTotal / 3600).toFixed(2)} h |`,
    );
    console.log(lines.at(-1));
    continue;
  }
  const once = async (epochs) =>
    measure(async () => {
      const arm = await spec.build({ ...common, epochs });
      return arm;
    });
  // a first training of n steps warms this arm's kernels up (not counted), then n and 3n
  const warm = await once(n / 5);
  warm.result.dispose();
  const a = await once(n / 5);
  a.result.dispose();
  const b = await once((3 * n) / 5);
  const perStep = (b.seconds - a.seconds) / (2 * n);
  // inference: one registration of a validation pair
  const inf = await measure(() =>
    evaluatePairs(dataset, b.result.register, {
      slices: dataset.validation.slice(0, 2),
      deformations: 1,
      seedBase: 300_000,
    }),
  );
  b.result.dispose();
  const perPair = inf.seconds / 2;
  let warmPerStep = 0;
  if (name === 'sitreg-mine') {
    const w0 = await measure(() => warmStartedMine({ seed: 1, steps: 0, warmData }));
    w0.result.estimator.dispose();
    const w1 = await measure(() => warmStartedMine({ seed: 1, steps: 2 * n, warmData }));
    w1.result.estimator.dispose();
    warmPerStep = (w1.seconds - w0.seconds) / (2 * n);
  }
  const steps = Number(spec.group === 'fire' ? args['full-fire-steps'] : args['full-steps']);
  const trainings = 3 + (full.seeds.length - 1);
  const registrations = 3 * validationPairs + full.seeds.length * testPairs;
  const armTotal =
    trainings * (steps * perStep + Number(args['full-warm-steps']) * warmPerStep) +
    registrations * perPair;
  total += armTotal;
  lines.push(
    `| ${name} | ${perStep.toFixed(3)} s per step${warmPerStep ? ` (+ warm start ${warmPerStep.toFixed(3)} s per step)` : ''} | ${perPair.toFixed(3)} s per registration | ${trainings} × ${steps} steps, ${registrations} registrations | ${(armTotal / 3600).toFixed(2)} h |`,
  );
  console.log(lines.at(-1));
  tf.dispose([]);
}
console.log(
  `\n| arm | training (CPU) | inference (CPU) | full protocol | CPU time |\n|---|---|---|---|---|\n${lines.join('\n')}\n\ntotal: ${(total / 3600).toFixed(2)} CPU-hours (${args.arms.split(',').length} arms, ${size.join('×')})`,
);
masr.dispose();
