#!/usr/bin/env node
/**
 * One training step of a 3D network at brain size on the default backend choice, as
 * `trainRegistration` runs it: `initBackend()` (wasm unless tfjs-node is installed) with
 * @regkit/kernels; a step that would not fit the wasm heap moves to cpu with one warning
 * (or, with `--on-full error`, throws the RegkitMemoryError). Prints one JSON line: the
 * backend it started and ended on, wall time of the step (wasm attempt included), loss,
 * whether the weights changed, the warnings, and the peak RSS of the process.
 *
 *   node bench/train3d.mjs [--model sitreg|voxelmorph] [--size 96x112x96] [--backend cpu|wasm]
 *                          [--on-full cpu|error] [--mode train|apply]
 *
 * `--mode apply` times one inference (`model.apply` in `tf.tidy`) through
 * `withWasmHeapFallback` instead of a training step.
 *
 * SITReg is `createSitreg({ ndim: 3, width: 0.25 })` with its own loss; VoxelMorph is
 * `createVoxelMorph({ ndim: 3 })` with local NCC. Images are seeded uniform noise.
 */
import { readFileSync } from 'node:fs';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const which = arg('model', 'sitreg');
const spatial = arg('size', '96x112x96').split('x').map(Number);
const core = await import('@regkit/core');
const { localNccLoss } = await import('@regkit/losses');
const { createSitreg, createVoxelMorph, trainRegistration } = await import('../dist/index.js');
const { tf } = core;

const started = await core.initBackend(arg('backend'), {
  kernels: await import('@regkit/kernels'),
});
const model =
  which === 'sitreg'
    ? createSitreg({ ndim: 3, width: 0.25, seed: 3 })
    : createVoxelMorph({ ndim: 3, seed: 3 });
const before = model.namedVariables().map(([, v]) => v.dataSync().slice());
const warnings = [];
const warn = console.warn;
console.warn = (m, ...rest) => {
  if (!/Hi, looks like/.test(String(m))) warnings.push(String(m));
  warn(m, ...rest);
};
let loss = Number.NaN;
const t0 = performance.now();
let error = null;
try {
  if (arg('mode', 'train') === 'apply') {
    const moving = tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 1);
    const fixed = tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 2);
    const forward = await core.withWasmHeapFallback(
      () => tf.tidy(() => tf.keep(model.apply(moving, fixed).forward)),
      { what: 'inference' },
    );
    loss = tf.tidy(() => tf.mean(tf.abs(forward)).dataSync()[0]); // mean |u| instead
    tf.dispose([moving, fixed, forward]);
  } else
    await trainRegistration({
      model,
      similarity: which === 'sitreg' ? undefined : (f, m) => localNccLoss(f, m),
      epochs: 1,
      learningRate: 1e-3,
      onWasmHeapFull: arg('on-full', 'cpu'),
      data: () =>
        tf.tidy(() => ({
          moving: tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 1),
          fixed: tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 2),
        })),
      onProgress: (p) => {
        loss = p.loss;
      },
    });
} catch (e) {
  error = `${e.name}: ${e.message}`;
}
const seconds = (performance.now() - t0) / 1000;
const after = model.namedVariables().map(([, v]) => v.dataSync());
let changed = 0;
before.forEach((b, i) => {
  for (let j = 0; j < b.length; j++) changed = Math.max(changed, Math.abs(b[j] - after[i][j]));
});
// VmHWM: the peak resident set of this process (Linux)
const status = (() => {
  try {
    return readFileSync('/proc/self/status', 'utf8');
  } catch {
    return '';
  }
})();
const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
console.log(
  JSON.stringify({
    suite: 'networks',
    op: `${arg('mode', 'train')}_${which}`,
    size: spatial.join('x'),
    startedOn: started,
    endedOn: tf.getBackend(),
    seconds: Number(seconds.toFixed(1)),
    loss,
    maxWeightChange: changed,
    warnings,
    error,
    peakRssGiB: hwm ? Number((Number(hwm[1]) / 2 ** 20).toFixed(2)) : null,
  }),
);
