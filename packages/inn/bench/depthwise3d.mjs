#!/usr/bin/env node
/**
 * Per-sample 3D depthwise convolution, three formulations (the package uses the first):
 *   slabs   — depthwiseConvPerSample: batch folded into channels, k depthwise 2D convolutions
 *             (one per depth offset, depth as the batch axis) summed
 *   shifted — k³ shifted slices of the zero-padded input times per-(sample, channel) weights
 *   conv3d  — one tf.conv3d per (sample, channel) with a [k, k, k, 1, 1] kernel
 * Median ms of forward and forward+backward (gradients w.r.t. input and kernels).
 *   METHODS=slabs,conv3d node bench/depthwise3d.mjs [cpu|wasm] [size=16] [channels=132] [k=7]
 */
import { initBackend, tf } from '@regkit/core';
import { depthwiseConvPerSample } from '../dist/index.js';

const [backend = 'wasm', size = '16', channels = '132', ks = '7'] = process.argv.slice(2);
await initBackend(backend);
const { initKernels, registerKernels } = await import('@regkit/kernels');
await initKernels();
registerKernels();

function shifted(x, kernels) {
  return tf.tidy(() => {
    const k = kernels.shape[1];
    const p = (k - 1) / 2;
    const [b, d, h, w, c] = x.shape;
    const padded = tf.pad(x, [
      [0, 0],
      [p, p],
      [p, p],
      [p, p],
      [0, 0],
    ]);
    const flat = tf.reshape(kernels, [b, k * k * k, c]);
    const terms = [];
    for (let i = 0; i < k ** 3; i++) {
      const o = [Math.floor(i / (k * k)), Math.floor(i / k) % k, i % k];
      const win = tf.slice(padded, [0, ...o, 0], [b, d, h, w, c]);
      terms.push(tf.mul(win, tf.reshape(tf.slice(flat, [0, i, 0], [b, 1, c]), [b, 1, 1, 1, c])));
    }
    return tf.addN(terms);
  });
}

function perChannel(x, kernels) {
  return tf.tidy(() => {
    const [b, , , , c] = x.shape;
    const k = kernels.shape[1];
    const items = [];
    for (let s = 0; s < b; s++) {
      const chans = [];
      for (let ch = 0; ch < c; ch++) {
        const xi = tf.slice(x, [s, 0, 0, 0, ch], [1, -1, -1, -1, 1]);
        const ki = tf.reshape(tf.slice(kernels, [s, 0, 0, 0, ch], [1, k, k, k, 1]), [
          k,
          k,
          k,
          1,
          1,
        ]);
        chans.push(tf.conv3d(xi, ki, 1, 'same'));
      }
      items.push(tf.concat(chans, -1));
    }
    return tf.concat(items, 0);
  });
}

const n = Number(size);
const c = Number(channels);
const k = Number(ks);
const x = tf.randomUniform([1, n, n, n, c], -1, 1, 'float32', 1);
const kern = tf.randomUniform([1, k, k, k, c], -1, 1, 'float32', 2);
const ref = depthwiseConvPerSample(x, kern);
for (const [name, f] of [
  ['slabs', depthwiseConvPerSample],
  ['shifted', shifted],
  ['conv3d', perChannel],
].filter(([name]) => !process.env.METHODS || process.env.METHODS.split(',').includes(name))) {
  const err = tf.tidy(() => tf.max(tf.abs(tf.sub(f(x, kern), ref))).dataSync()[0]);
  for (const mode of ['fwd', 'fwd_bwd']) {
    const run = () =>
      mode === 'fwd' ? f(x, kern) : tf.grads((a, b) => tf.sum(tf.square(f(a, b))))([x, kern]);
    const times = [];
    for (let i = 0; i < 4; i++) {
      const t0 = performance.now();
      const out = run();
      await (Array.isArray(out) ? out[0] : out).data();
      times.push(performance.now() - t0);
      tf.dispose(out);
    }
    times.sort((a, b) => a - b);
    console.log(
      JSON.stringify({
        backend,
        op: `depthwise3d_${name}_${mode}`,
        size: `${n}^3x${c}`,
        k,
        ms: +times[2].toFixed(1),
        maxDiff: err,
      }),
    );
  }
}
