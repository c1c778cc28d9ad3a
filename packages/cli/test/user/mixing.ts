/**
 * A user's file that mixes parts from different papers through the shared contracts only,
 * written as a user would (no casts, `tsc --strict`): SITReg trained with MINE, VoxelMorph
 * trained with MIND, and instance optimisation on MIND features. `mixing.test.ts` checks
 * that it type-checks under `--strict` and runs it.
 */
import { type FeatureExtractor, mulberry32, type NamedWeights, tf, warp } from '@regkit/core';
import { MineEstimator, mindLoss, mindSsc } from '@regkit/losses';
import {
  createSitreg,
  createVoxelMorph,
  type TrainingPair,
  trainRegistration,
} from '@regkit/networks';
import { registerImages } from '@regkit/register';

/** Largest absolute change between two snapshots of the same weights. */
function largestChange(before: NamedWeights, after: NamedWeights): number {
  let largest = 0;
  for (const [path, w] of Object.entries(before)) {
    const a = w.dataSync();
    const b = after[path]!.dataSync();
    for (let i = 0; i < a.length; i++) largest = Math.max(largest, Math.abs(a[i]! - b[i]!));
  }
  return largest;
}

/** A 32×32 pair: smooth random blobs, the fixed one shifted and in an inverted contrast. */
function pair(seed: number): TrainingPair {
  return tf.tidy(() => {
    const rand = mulberry32(seed);
    const v = new Float32Array(32 * 32);
    for (let b = 0; b < 12; b++) {
      const [ci, cj, r] = [rand() * 32, rand() * 32, 2 + 3 * rand()];
      for (let i = 0; i < 32; i++) {
        for (let j = 0; j < 32; j++) {
          v[i * 32 + j]! += Math.exp(-((i - ci) ** 2 + (j - cj) ** 2) / (2 * r * r));
        }
      }
    }
    const moving = tf.tensor4d(v, [1, 32, 32, 1]);
    const shift = tf.mul(tf.ones([1, 32, 32, 2]), tf.tensor1d([1.5, -1]));
    const fixed = tf.sub(1, warp(moving, shift));
    return { moving, fixed };
  });
}

/** What {@link mixParts} measured. */
export interface MixingResult {
  /** Largest weight change of SITReg and of the MINE statistics network trained with it. */
  sitregChange: number;
  mineChange: number;
  /** Largest weight change of VoxelMorph trained with MIND. */
  voxelMorphChange: number;
  /** Mean squared MIND difference before and after `registerImages` on MIND features. */
  mindBefore: number;
  mindAfter: number;
}

/** Trains and registers with mixed parts; every tensor it makes is freed. */
export async function mixParts(): Promise<MixingResult> {
  // SITReg (Honkamaa & Marttinen) trained with MINE (Snaauw et al.): both weight sets train
  const sitreg = createSitreg({ ndim: 2, width: 0.25, levels: 3 });
  const mine = new MineEstimator({ shuffle: 'local', channelsA: 1, channelsB: 1, seed: 1 });
  const sitregBefore = sitreg.getWeights();
  const mineBefore = mine.getWeights();
  await trainRegistration({
    model: sitreg,
    similarity: mine,
    epochs: 2,
    learningRate: 1e-3,
    data: (epoch) => pair(epoch),
  });
  const sitregAfter = sitreg.getWeights();
  const mineAfter = mine.getWeights();

  // VoxelMorph trained with MIND-SSC (Heinrich et al.) as its similarity
  const voxelMorph = createVoxelMorph({ ndim: 2, encoder: [4, 8], decoder: [8, 8, 4] });
  const vmBefore = voxelMorph.getWeights();
  await trainRegistration({
    model: voxelMorph,
    similarity: mindLoss,
    epochs: 2,
    learningRate: 1e-3,
    data: (epoch) => pair(10 + epoch),
  });
  const vmAfter = voxelMorph.getWeights();

  // instance optimisation on MIND features, computed once per level
  const features: FeatureExtractor = { apply: (image) => mindSsc(image) };
  const { moving, fixed } = pair(20);
  const result = await registerImages(fixed, moving, { features, iterations: [20, 20, 20] });
  const warped = warp(moving, result.forward);
  const before = mindLoss(fixed, moving);
  const after = mindLoss(fixed, warped);

  const out: MixingResult = {
    sitregChange: largestChange(sitregBefore, sitregAfter),
    mineChange: largestChange(mineBefore, mineAfter),
    voxelMorphChange: largestChange(vmBefore, vmAfter),
    mindBefore: before.dataSync()[0]!,
    mindAfter: after.dataSync()[0]!,
  };
  tf.dispose([
    ...Object.values(sitregBefore),
    ...Object.values(sitregAfter),
    ...Object.values(mineBefore),
    ...Object.values(mineAfter),
    ...Object.values(vmBefore),
    ...Object.values(vmAfter),
    moving,
    fixed,
    warped,
    before,
    after,
    result.forward,
  ]);
  // every tensor of the output is the caller's: the affine stage's matrix too
  if (result.velocity) result.velocity.dispose();
  if (result.affine) result.affine.dispose();
  sitreg.dispose();
  mine.dispose();
  voxelMorph.dispose();
  return out;
}
