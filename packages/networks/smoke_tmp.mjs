import { initBackend, randomSmoothField, tf, warp } from '@regkit/core';
import { localNccLoss, MineEstimator } from '@regkit/losses';
import { createVoxelMorph, trainRegistration } from '@regkit/networks';

const be = process.argv[2] ?? 'wasm';
await initBackend(be);
const { registerKernels, initKernels } = await import('@regkit/kernels');
await initKernels();
registerKernels();
const S = Number(process.argv[3] ?? 128);
const model = createVoxelMorph({ ndim: 2, probabilistic: true });
console.log('params', model.parameterCount);
const fixed = tf.randomUniform([1, S, S, 1], 0, 1, 'float32', 1);
const mov = tf.randomUniform([1, S, S, 1], 0, 1, 'float32', 2);
const mine = new MineEstimator({ shuffle: 'local', channelsA: 1, channelsB: 1 });
for (const [name, sim] of [
  ['ncc', (f, w) => localNccLoss(w, f, { window: 9 })],
  ['mine', mine],
]) {
  const t0 = Date.now();
  const r = await trainRegistration({
    model,
    similarity: sim,
    epochs: 10,
    data: () => ({ moving: mov.clone(), fixed: fixed.clone() }),
  });
  console.log(name, 'ms/step', (Date.now() - t0) / 10, r.history.slice(-1), tf.memory().numTensors);
}
const t0 = Date.now();
for (let i = 0; i < 5; i++) {
  const o = model.apply(mov, fixed);
  tf.dispose(Object.values(o).filter(Boolean));
}
console.log('infer ms', (Date.now() - t0) / 5);
