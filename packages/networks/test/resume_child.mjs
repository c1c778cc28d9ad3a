// Child process of resume.test.ts: `node resume_child.mjs TRAINER CHECKPOINT_DIR OUT.json [SLOW_MS]`
// trains TRAINER (resume_trainers.mjs) with a checkpoint directory on the wasm backend with @regkit/kernels (as the examples) and
// writes every final weight (base64 of its bytes), the result and the tensor counts to OUT.json.
// With SLOW_MS, every step after the first checkpoint sleeps that long, so the parent can
// SIGKILL it once checkpoint.json appears.
import { writeFileSync } from 'node:fs';
import { initBackend } from '@regkit/core';
import { initKernels, registerKernels } from '@regkit/kernels';
import { EPOCHS, train } from './resume_trainers.mjs';

const [name, dir, out, slow] = process.argv.slice(2);
await initBackend('wasm');
await initKernels();
registerKernels();
const sleeper = new Int32Array(new SharedArrayBuffer(4));
const { weights, result, counts } = await train(name, {
  epochs: EPOCHS,
  checkpointDir: dir,
  onEpoch: () => {
    if (slow) Atomics.wait(sleeper, 0, 0, Number(slow));
  },
});
const encoded = Object.fromEntries(
  Object.entries(weights).map(([k, v]) => [k, Buffer.from(v).toString('base64')]),
);
writeFileSync(out, JSON.stringify({ weights: encoded, result, counts }));
