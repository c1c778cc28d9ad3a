#!/usr/bin/env node
/**
 * Why VoxelMorph does not leave the identity in 50 steps (examples/mix, issue 21): at
 * initialisation, the gradient of the training loss with respect to each weight group
 * (`[flow]` the last convolution, N(0, 10⁻⁵) weights; `[unet]` everything before it) against
 * Adam's ε (tf.js: 10⁻⁷), then short trainings on the protocol's training pairs with the
 * configuration changed one factor at a time (learning rate, similarity weight α), each
 * reporting the mean |u| (voxels) and mean Dice on the validation pairs.
 *
 *   node src/diagnose-voxelmorph.mjs [--size 64] [--steps 50] [--similarity mi|dns]
 *     [--variants 'lr=1e-3,alpha=1;lr=1e-2,alpha=1']
 */
import { parseArgs } from 'node:util';
import { tf } from '@regkit/core';
import { initExampleBackend } from '@regkit/example-common/backend';
import {
  bratsProtocolDataset,
  evaluatePairs,
  protocolTrainingPair,
} from '@regkit/example-common/protocol';
import { diffusionLoss, localNccLoss, mindLoss, mutualInformationLoss } from '@regkit/losses';
import { createVoxelMorph, loadMasrNet, trainRegistration } from '@regkit/networks';
import { dnsSimilarity } from './combinations.mjs';

const { values: args } = parseArgs({
  options: {
    size: { type: 'string', default: '64' },
    steps: { type: 'string', default: '50' },
    similarity: { type: 'string', default: 'mi' },
    variants: { type: 'string', default: 'lr=1e-3,alpha=1;lr=1e-3,alpha=10;lr=1e-2,alpha=1' },
    seed: { type: 'string', default: '1' },
  },
});
const backend = await initExampleBackend();
const size = [Number(args.size), Number(args.size)];
const steps = Number(args.steps);
const seed = Number(args.seed);
const dataset = await bratsProtocolDataset('t2f_flair', size);
if (!dataset) {
  console.log('the read-only BraTS case was not found (set REGKIT_BRATS_DIR)');
  process.exit(0);
}
const masr = args.similarity === 'dns' ? (await loadMasrNet()).model : null;
const similarity = {
  dns: () => dnsSimilarity(masr),
  mi: () => (f, w) => mutualInformationLoss(f, w),
  mind: () => (f, w) => mindLoss(f, w),
  ncc: () => (f, w) => localNccLoss(f, w, { window: 9 }),
}[args.similarity]();
console.log(`backend ${backend}, ${size.join('×')}, similarity ${args.similarity}, seed ${seed}`);

// 1. gradient magnitudes at initialisation (mean over 4 training pairs)
{
  const model = createVoxelMorph({ ndim: 2, seed });
  const list = model.namedVariables().filter(([, v]) => v.trainable);
  const sums = new Map();
  for (let i = 0; i < 4; i++) {
    const p = protocolTrainingPair(dataset, seed, i);
    const { grads } = tf.variableGrads(
      () => {
        const out = model.apply(p.moving, p.fixed);
        const loss = tf.add(similarity(p.fixed, out.warped), diffusionLoss(out.velocity));
        tf.dispose([out.forward, out.inverse, out.velocity]);
        return loss;
      },
      list.map(([, v]) => v),
    );
    for (const [name, v] of list) {
      const g = grads[v.name];
      const rms = tf.tidy(() => tf.sqrt(tf.mean(tf.square(g))).dataSync()[0]);
      const group = name.includes('flow') ? 'flow' : 'unet';
      const s = sums.get(group) ?? { n: 0, rms: [], below: 0, count: 0 };
      s.rms.push(rms);
      const abs = tf.tidy(() => tf.abs(g).dataSync());
      for (const a of abs) s.below += a < 1e-7;
      s.count += abs.length;
      sums.set(group, s);
    }
    tf.dispose(Object.values(grads));
    tf.dispose([p.moving, p.fixed]);
  }
  for (const [group, s] of sums) {
    const sorted = [...s.rms].sort((a, b) => a - b);
    console.log(
      `  init gradient [${group}]: RMS per variable median ${sorted[Math.floor(sorted.length / 2)].toExponential(2)}, max ${sorted.at(-1).toExponential(2)}; |g| < Adam ε (1e-7): ${((100 * s.below) / s.count).toFixed(1)} % of entries`,
    );
  }
  model.dispose();
}

// 2. short trainings, one factor at a time
const variants = args.variants.split(';').map((v) =>
  Object.fromEntries(
    v.split(',').map((kv) => {
      const [k, x] = kv.split('=');
      return [k, Number(x)];
    }),
  ),
);
for (const v of variants) {
  const model = createVoxelMorph({ ndim: 2, seed });
  if (v.flowStd) {
    // re-draw the flow convolution's weights from N(0, flowStd²) (seeded)
    const w = model.flow.kernel;
    tf.tidy(() => w.assign(tf.randomNormal(w.shape, 0, v.flowStd, 'float32', seed)));
  }
  if (v.he) {
    // re-draw every U-Net kernel [...k, Cin, Cout] from He's N(0, gain²·2/fanIn), fanIn = k^d·Cin
    let i = 0;
    for (const [name, w] of model.unet.namedVariables()) {
      if (!name.endsWith('kernel')) continue;
      const fanIn = w.shape.slice(0, -1).reduce((a, b) => a * b, 1);
      const std = v.he * Math.sqrt(2 / fanIn);
      tf.tidy(() => w.assign(tf.randomNormal(w.shape, 0, std, 'float32', seed * 100 + i++)));
    }
  }
  // `scale` multiplies both weights (the same objective, scaled: only Adam's ε sees it)
  const scale = v.scale ?? 1;
  const t0 = performance.now();
  const history = [];
  await trainRegistration({
    model,
    similarity,
    similarityWeight: scale * (v.alpha ?? 1),
    regularisationWeight: scale * (v.lambda ?? 1),
    learningRate: v.lr ?? 1e-3,
    beta1: 0.9,
    beta2: 0.999,
    epochs: steps / 5,
    stepsPerEpoch: 5,
    data: (epoch, step) => protocolTrainingPair(dataset, seed, v.onePair ? 0 : epoch * 5 + step),
    onProgress: (p) => history.push(p),
  });
  const seconds = (performance.now() - t0) / 1000;
  let umean = 0;
  const rows = await evaluatePairs(
    dataset,
    async (m, f) => {
      const out = model.apply(m, f);
      umean += tf.tidy(() => tf.mean(tf.sqrt(tf.sum(tf.square(out.forward), -1))).dataSync()[0]);
      tf.dispose([out.warped, out.velocity, out.inverse]);
      return { forward: out.forward };
    },
    { slices: dataset.validation, deformations: 1, seedBase: 200_000 },
  );
  const dice = rows.reduce((p, r) => p + r.dice, 0) / rows.length;
  const tail = history.slice(-10);
  const simTail = tail.reduce((p, h) => p + h.similarity, 0) / tail.length;
  const simHead = history.slice(0, 10).reduce((p, h) => p + h.similarity, 0) / 10;
  const regTail = tail.reduce((p, h) => p + h.regularisation, 0) / tail.length;
  console.log(
    `  ${JSON.stringify(v)}: validation Dice ${(100 * dice).toFixed(1)}, mean |u| ${(umean / rows.length).toFixed(3)} voxels, weighted similarity first 10 steps ${simHead.toFixed(4)} → last 10 ${simTail.toFixed(4)} (regulariser ${regTail.toExponential(2)}), ${seconds.toFixed(0)} s`,
  );
  model.dispose();
}
{
  const rows = await evaluatePairs(dataset, null, {
    slices: dataset.validation,
    deformations: 1,
    seedBase: 200_000,
  });
  console.log(
    `  identity: validation Dice ${((100 * rows.reduce((p, r) => p + r.dice, 0)) / rows.length).toFixed(1)}`,
  );
}
masr?.dispose();
