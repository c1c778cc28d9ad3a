#!/usr/bin/env node
/**
 * invertField benchmark: iterations, median wall time (forward; forward + backward) and peak
 * tensor memory (tf.profile peakBytes, i.e. tf.memory bytes, which counts reshaped views too) of
 * the deformation inversion layer, with Anderson acceleration (m = 4) and with plain iteration,
 * against the SVF alternative (core's integrateVelocity, 7 squarings) and, for memory, a taped
 * unrolled iteration. The WebAssembly warp kernels of @regkit/kernels are registered.
 *
 *   node bench/run.mjs                         # wasm, 2D 192x192 and 3D 64x64x64
 *   node bench/run.mjs --backend cpu --sizes 96x96
 *
 * Fields: core's randomSmoothField (seed 1; 2D: max 8 voxels, control spacing 24; 3D: max 4
 * voxels, spacing 16) and a SITReg-like boundedCubicSplineDeformation with saturated random
 * control points (factor 4). Loss for the backward pass: sum(v * w), w uniform in [−1, 1].
 * Prints one JSON line per measurement.
 */
import * as core from '@regkit/core';
import { initKernels, registerKernels } from '@regkit/kernels';
import * as inv from '../dist/index.js';

const { tf } = core;
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const backend = arg('backend', 'wasm');
const sizes = arg('sizes', '192x192,64x64x64').split(',');
const runs = Number(arg('runs', '5'));

await core.initBackend(backend);
await initKernels();
registerKernels();

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function time(fn) {
  fn(); // warm-up
  const ms = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    fn();
    ms.push(performance.now() - t0);
  }
  return Math.round(median(ms) * 10) / 10;
}

function fields(spatial) {
  const nd = spatial.length;
  const smooth = core.randomSmoothField(spatial, {
    maxDisplacement: nd === 2 ? 8 : 4,
    controlSpacing: nd === 2 ? 24 : 16,
    seed: 1,
  });
  const grid = spatial.map((s) => s / 4);
  const rand = core.mulberry32(3);
  const n = grid.reduce((a, b) => a * b, 1) * nd;
  const raw = tf.tensor(
    Float32Array.from({ length: n }, () => (rand() < 0.5 ? -30 : 30)),
    [1, ...grid, nd],
  );
  const spline = inv.boundedCubicSplineDeformation(raw, spatial, { upsamplingFactor: 4 });
  raw.dispose();
  return { smooth, spline };
}

for (const size of sizes) {
  const spatial = size.split('x').map(Number);
  const { smooth, spline } = fields(spatial);
  const w = tf.randomUniform(smooth.shape, -1, 1, 'float32', 2);
  const fieldBytes = smooth.size * 4;
  for (const [name, u] of [
    ['smooth', smooth],
    ['bounded_spline_f4', spline],
  ]) {
    for (const anderson of [undefined, false]) {
      const infos = [];
      const opts = { anderson, onSolve: (s) => infos.push(s) };
      const fwd = time(() => inv.invertField(u, opts).dispose());
      const forward = infos.at(-1);
      infos.length = 0;
      const loss = (x) => tf.sum(tf.mul(inv.invertField(x, opts), w));
      const fwdBwd = time(() => tf.dispose(tf.grad(loss)(u)));
      const backward = infos.at(-1);
      const residual = tf.tidy(() =>
        tf.max(tf.abs(core.composeFields(u, inv.invertField(u, { anderson })))),
      );
      console.log(
        JSON.stringify({
          backend,
          size,
          field: name,
          solver: anderson === false ? 'plain' : 'anderson(m=4)',
          forward_iterations: forward.iterations,
          forward_residual_vox: Number(forward.residual.toPrecision(3)),
          max_abs_u_plus_v_of_x_plus_v: Number(residual.dataSync()[0].toPrecision(3)),
          backward_iterations: backward.iterations,
          fwd_ms: fwd,
          fwd_bwd_ms: fwdBwd,
        }),
      );
      residual.dispose();
    }
  }
  // memory: forced iteration counts (tolerance 0), implicit vs taped unrolled, and the SVF
  const peak = async (f) => {
    const before = tf.memory().numBytes;
    const info = await tf.profile(() => tf.grad(f)(smooth));
    info.result.dispose();
    return Math.round(((info.peakBytes - before) / fieldBytes) * 10) / 10;
  };
  const unrolled = (u, n) => {
    let v = tf.neg(u);
    for (let i = 0; i < n; i++) v = tf.neg(core.warp(u, v, { padding: 'border' }));
    return v;
  };
  for (const iterations of [10, 40]) {
    const forced = {
      tolerance: 0,
      maxIterations: iterations,
      backward: { tolerance: 0, maxIterations: iterations },
    };
    console.log(
      JSON.stringify({
        backend,
        size,
        memory: 'peak tf.memory bytes during tf.grad, in fields',
        iterations,
        invertField_implicit: await peak((x) => tf.sum(tf.mul(inv.invertField(x, forced), w))),
        unrolled_taped: await peak((x) => tf.sum(tf.mul(unrolled(x, iterations), w))),
      }),
    );
  }
  const svfFwd = time(() => core.integrateVelocity(tf.neg(smooth)).dispose());
  const svfFwdBwd = time(() =>
    tf.dispose(
      tf.grad((x) => tf.sum(tf.mul(core.integrateVelocity(inv.invertVelocity(x)), w)))(smooth),
    ),
  );
  console.log(
    JSON.stringify({
      backend,
      size,
      field: 'smooth (as a velocity)',
      solver: 'integrateVelocity(invertVelocity(v)), 7 squarings',
      fwd_ms: svfFwd,
      fwd_bwd_ms: svfFwdBwd,
      peak_fields: await peak((x) =>
        tf.sum(tf.mul(core.integrateVelocity(inv.invertVelocity(x)), w)),
      ),
    }),
  );
  tf.dispose([smooth, spline, w]);
}
