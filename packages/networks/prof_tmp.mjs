import { initBackend, tf } from '@regkit/core';
import { localNccLoss } from '@regkit/losses';
import { createVoxelMorph } from '@regkit/networks';

const be = process.argv[2] ?? 'wasm';
await initBackend(be);
const { registerKernels, initKernels } = await import('@regkit/kernels');
await initKernels();
registerKernels();
const S = 128;
const model = createVoxelMorph({ ndim: 2, probabilistic: true });
const fixed = tf.randomUniform([1, S, S, 1], 0, 1, 'float32', 1);
const mov = tf.randomUniform([1, S, S, 1], 0, 1, 'float32', 2);
const step = () => {
  const { value, grads } = tf.variableGrads(() => {
    const o = model.apply(mov, fixed, { sample: true });
    return localNccLoss(o.warped, fixed);
  }, model.trainableVariables);
  value.dataSync();
  tf.dispose([value, ...Object.values(grads)]);
};
step();
const info = await tf.profile(step);
const agg = {};
for (const k of info.kernels) {
  agg[k.name] = agg[k.name] ?? { ms: 0, n: 0 };
  agg[k.name].ms += k.kernelTimeMs;
  agg[k.name].n++;
}
console.log(
  Object.entries(agg)
    .sort((a, b) => b[1].ms - a[1].ms)
    .slice(0, 15)
    .map(([k, v]) => `${k} ${v.ms.toFixed(1)}ms x${v.n}`)
    .join('\n'),
);
const t0 = Date.now();
step();
console.log('step', Date.now() - t0);
