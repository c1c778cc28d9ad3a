// The trainers of resume.test.ts and resume_child.mjs: tiny 2D models, deterministic data.
import { tf } from '@regkit/core';
import { ddwDenseBlockSubnet } from '@regkit/inn';
import { localNccLoss, MineEstimator } from '@regkit/losses';
import {
  createFire,
  createInnreg,
  createSitreg,
  createVoxelMorph,
  trainFire,
  trainInnreg,
  trainRegistration,
  trainSitreg,
} from '@regkit/networks';

/** Epochs of a complete run and optimiser steps per epoch (5: Adam's pow and products differ at t = 5). */
export const EPOCHS = 3;
export const STEPS = 5;

function blob(size, cy, cx, r) {
  const v = new Float32Array(size * size);
  for (let i = 0; i < size; i++) {
    for (let j = 0; j < size; j++)
      v[i * size + j] = Math.exp(-((i - cy) ** 2 + (j - cx) ** 2) / (2 * r * r));
  }
  return tf.tensor(v, [1, size, size, 1]);
}

/** A different pair at every (epoch, step). */
const data = (epoch, step) =>
  tf.tidy(() => ({
    moving: tf.add(tf.mul(blob(16, 8 + (step % 2), 5 + ((epoch + step) % 4), 3), 0.9), 0.05),
    fixed: tf.sub(0.95, tf.mul(blob(16, 8, 9, 3), 0.9)),
  }));

const voxelmorph = { ndim: 2, encoder: [4, 8], decoder: [8, 8, 4] };

/** name → (common trainer options) → { modules: the trained modules by prefix, run: the training }. */
const TRAINERS = {
  // a function similarity
  voxelmorph: (o) => {
    const model = createVoxelMorph({ ...voxelmorph, seed: 1 });
    const run = trainRegistration({
      ...o,
      model,
      similarity: (f, w) => localNccLoss(w, f, { window: 5 }),
    });
    return { modules: { model }, run };
  },
  // two parameter groups (their own Adam and rate) plus the default group for the rest
  'voxelmorph-groups': (o) => {
    const model = createVoxelMorph({ ...voxelmorph, seed: 8 });
    const run = trainRegistration({
      ...o,
      model,
      similarity: (f, w) => localNccLoss(w, f, { window: 5 }),
      parameterGroups: [
        { name: 'flow', learningRate: 3e-3, paths: ['model/flow/'] },
        { name: 'encoder', learningRate: 5e-3, paths: (p) => p.includes('/enc') },
      ],
    });
    return { modules: { model }, run };
  },
  // MINE built in the constructor, with bias correction (its moving average) and local shuffles
  'voxelmorph-mine': (o) => {
    const model = createVoxelMorph({ ...voxelmorph, seed: 2 });
    const mine = new MineEstimator({
      shuffle: 'local',
      neighbourhood: 3,
      features: 8,
      biasCorrection: true,
      channelsA: 1,
      seed: 3,
    });
    const run = trainRegistration({ ...o, model, similarity: mine });
    return { modules: { model, similarity: mine }, run };
  },
  // probabilistic VoxelMorph (posterior samples, KL) and a lazily built MINE, global shuffles
  'voxelmorph-mine-lazy': (o) => {
    const model = createVoxelMorph({ ...voxelmorph, probabilistic: true, seed: 4 });
    const mine = new MineEstimator({ features: 8, seed: 5 });
    const run = trainRegistration({ ...o, model, similarity: mine });
    return { modules: { model, similarity: mine }, run };
  },
  sitreg: (o) => {
    const model = createSitreg({
      ndim: 2,
      featureChannels: [4, 8, 8],
      headChannels: [8, 8, 8],
      seed: 6,
    });
    return { modules: { model }, run: trainSitreg({ ...o, model }) };
  },
  // FIRE: three Adams (affine, non-rigid, synthesis), each with its own state in the checkpoint
  fire: (o) => {
    const model = createFire({
      ndim: 2,
      encoderChannels: [2, 3, 4],
      residualBlocks: 1,
      nonRigidChannels: 2,
      affineChannels: [2, 3, 3],
      affineHidden: 4,
      seed: 9,
    });
    const { learningRate, ...rest } = o;
    const rates = {
      affine: learningRate / 10,
      nonRigid: learningRate / 2,
      synthesis: learningRate,
    };
    return { modules: { model }, run: trainFire({ ...rest, model, learningRates: rates }) };
  },
  innreg: (o) => {
    const model = createInnreg({
      ndim: 2,
      translator: {
        blocks: 1,
        subnet: ddwDenseBlockSubnet({ growth: 4, attention: { kernelSize: 3 } }),
      },
      registration: { encoder: [4, 8], decoder: [8, 8, 4] },
      seed: 7,
    });
    return { modules: { model }, run: trainInnreg({ ...o, model, loss: { nmi: 'plain' } }) };
  },
};

export const TRAINER_NAMES = Object.keys(TRAINERS);

/**
 * Trains `name` for `epochs` (resuming from `checkpointDir` when it holds a checkpoint) and
 * returns every weight's bytes by path, the trainer's result and the tensor count after each
 * epoch; disposes the modules.
 */
export async function train(name, { epochs, checkpointDir, onEpoch }) {
  const counts = [];
  const { modules, run } = TRAINERS[name]({
    data,
    epochs,
    stepsPerEpoch: STEPS,
    learningRate: 1e-2,
    checkpointDir,
    onProgress: (p) => {
      if (p.step === p.stepsPerEpoch - 1) {
        counts.push(tf.memory().numTensors);
        onEpoch?.(p.epoch);
      }
    },
  });
  const result = await run;
  const weights = {};
  for (const [prefix, m] of Object.entries(modules)) {
    for (const [p, v] of m.namedVariables())
      weights[`${prefix}/${p}`] = new Uint8Array(v.dataSync().slice().buffer);
  }
  for (const m of Object.values(modules)) m.dispose();
  return { weights, result, counts };
}
