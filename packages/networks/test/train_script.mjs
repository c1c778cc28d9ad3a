// Child process of train.test.ts: trains a tiny VoxelMorph with a checkpoint directory and
// optionally kills itself (SIGKILL) in the middle of epoch KILL_AT_EPOCH, then saves weights.
import { initBackend, tf } from '@regkit/core';
import { mseLoss } from '@regkit/losses';
import { createVoxelMorph, saveWeights, trainRegistration } from '@regkit/networks';

const [dir, out, killAt] = process.argv.slice(2);
await initBackend('cpu');
const model = createVoxelMorph({
  ndim: 2,
  encoder: [4, 8],
  decoder: [8, 8, 4],
  probabilistic: true,
  seed: 4,
});
const result = await trainRegistration({
  model,
  similarity: (f, w) => mseLoss(w, f),
  similarityWeight: 100,
  learningRate: 1e-2,
  epochs: 6,
  stepsPerEpoch: 3,
  data: (epoch, step) => ({
    moving: tf.randomUniform([1, 16, 16, 1], 0, 1, 'float32', 100 * epoch + step),
    fixed: tf.randomUniform([1, 16, 16, 1], 0, 1, 'float32', 100 * epoch + step + 50),
  }),
  checkpointDir: dir,
  onProgress: (p) => {
    if (killAt !== undefined && p.epoch === Number(killAt) && p.step === 1)
      process.kill(process.pid, 'SIGKILL');
  },
});
await saveWeights(model, out);
console.log(JSON.stringify(result));
