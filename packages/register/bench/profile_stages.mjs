// Profiles registerImages stage by stage (affine stage alone, then the deformable levels)
// on a fixed/moving pair of NIfTI files, printing wall and CPU seconds per stage/level.
//   node packages/register/bench/profile_stages.mjs FIXED MOVING SIMILARITY [JSON options]
import { initBackend, tf } from '@regkit/core';
import * as kernels from '@regkit/kernels';
import { readNifti } from '../../io/dist/index.js';
import { normalizeIntensity, registerAffine, registerImages } from '../dist/index.js';

const [fixedPath, movingPath, similarity = 'mind', json = '{}'] = process.argv.slice(2);
const extra = JSON.parse(json);
await initBackend('wasm', { kernels });
const f = await normalizeIntensity((await readNifti(fixedPath)).data);
const m = await normalizeIntensity((await readNifti(movingPath)).data);
const clock = () => [performance.now(), process.cpuUsage()];
const since = ([t, c]) => {
  const u = process.cpuUsage(c);
  return `${((performance.now() - t) / 1000).toFixed(2)} s wall, ${((u.user + u.system) / 1e6).toFixed(2)} s cpu`;
};
let t = clock();
let last = t;
const aff = await registerAffine(f, m, {
  similarity: similarity === 'mi' || similarity === 'mind' ? similarity : 'ncc',
  iterations: extra.affineIterations ?? [60, 30, 0],
  ...(extra.affineOptions ?? {}),
  onProgress: (p) => {
    if (p.iteration === p.iterations) {
      console.log(`affine level ${p.level}: ${since(last)}  sim ${p.similarity.toFixed(4)}`);
      last = clock();
    }
  },
});
console.log(`affine total: ${since(t)}`);
tf.dispose([aff.forward]);
t = clock();
last = t;
const r = await registerImages(f, m, {
  similarity,
  affine: aff.affine,
  skipFinest: 1,
  iterations: [20, 10, 0],
  returnVelocity: false,
  ...(extra.options ?? {}),
  onProgress: (p) => {
    if (p.iteration === p.iterations) {
      console.log(`deformable level ${p.level}: ${since(last)}  sim ${p.similarity.toFixed(4)}`);
      last = clock();
    }
  },
});
console.log(`deformable total: ${since(t)}`);
tf.dispose([r.forward, r.affine, aff.affine]);
