#!/usr/bin/env node
/**
 * DNS / MASR-Net in small (Mok et al., CVPR 2024): instance optimisation with the bundled
 * MASR-Net features (IO-DNS) against MIND-SSC (IO-MIND) and mutual information (IO-MI) on
 * multi-modal 2D pairs with known synthetic deformations, plus a small ablation (random-init
 * network, no Gaussian smoothing ψ_σ) and a Fig. 4-style similarity map.
 *
 *   node src/run.mjs                      # every task, prints the table, writes results/
 *   node src/run.mjs --tasks itk --pairs 1
 *
 * Tasks: BraTS T1 → T2 and T1 → FLAIR (../shared/data/read-only/brats_case, read-only;
 * skipped when absent; test slices z ≡ 5 mod 10, labels = tumour classes + rest of the brain)
 * and the bundled ITK/BrainWeb T1 → PD slice (no labels). Each pair deforms both images by
 * independent random B-spline fields (examples/common/src/slices.mjs).
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { tf } from '@regkit/core';
import { initExampleBackend } from '@regkit/example-common/backend';
import { cell, evaluateMethod, markdownTable } from '@regkit/example-common/evaluate';
import { bratsDataset, itkPairDataset } from '@regkit/example-common/slices';
import { encodePng } from '@regkit/io';
import { mindSsc } from '@regkit/losses';
import { createMasrNet, loadMasrNet } from '@regkit/networks';
import { dnsRegistrationOptions, registerImages } from '@regkit/register';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    tasks: { type: 'string', default: 't2,flair,itk' },
    methods: { type: 'string', default: 'dns,dns-nosmooth,dns-random,mind,mi' },
    pairs: { type: 'string', default: '1' },
    weights: { type: 'string' },
    out: { type: 'string', default: join(here, '../results') },
    backend: { type: 'string' },
  },
});
const backend = await initExampleBackend(args.backend);
const { model: net, metadata } = await loadMasrNet(args.weights);
const random = createMasrNet({ ...net.options, seed: 7 });
console.log(`backend ${backend}; MASR-Net: ${metadata.description ?? '(no description)'}`);

/** The shared deformable set-up: 3 levels, the paper's iterations, displacement, no affine. */
const COMMON = {
  affine: false,
  transform: 'displacement',
  fieldDownsample: 1,
  levels: 3,
  iterations: [100, 80, 50],
  returnVelocity: false,
};
const METHODS = {
  dns: {
    label: 'IO-DNS (MASR-Net, ψ_σ σ = 1)',
    options: (size) => dnsRegistrationOptions(size, net),
  },
  'dns-nosmooth': {
    label: 'IO-DNS without ψ_σ (σ = 0)',
    options: (size) => dnsRegistrationOptions(size, net, { sigma: 0 }),
  },
  'dns-random': {
    label: 'IO-DNS, random-init MASR-Net (no training)',
    options: (size) => dnsRegistrationOptions(size, random),
  },
  mind: { label: 'IO-MIND (MIND-SSC, MSE)', options: () => ({ similarity: 'mind' }) },
  mi: { label: 'IO-MI (Parzen MI, 16 bins)', options: () => ({ similarity: 'mi' }) },
};

const LOADERS = {
  t2: () => bratsDataset('t2w'),
  flair: () => bratsDataset('t2f_flair'),
  itk: () => itkPairDataset(),
};
const pairs = Number(args.pairs);
const rows = [];
const tables = [];
let figureDataset = null;
for (const key of args.tasks.split(',').filter(Boolean)) {
  const ds = await LOADERS[key]?.();
  if (!ds) {
    console.log(`${key}: data absent (read-only folder), skipped`);
    continue;
  }
  figureDataset ??= ds;
  const n = ds.test.length * (ds.slices.size === 1 ? 3 : pairs);
  console.log(`\n${ds.name} (${ds.size.join('×')}, ${n} test pairs)`);
  const evalOptions = { deformationsPerSlice: ds.slices.size === 1 ? 3 : pairs };
  const initial = await evaluateMethod(ds, null, evalOptions);
  const taskRows = [{ task: key, method: 'initial', label: 'Initial (identity)', ...initial }];
  for (const m of args.methods.split(',').filter(Boolean)) {
    const spec = METHODS[m];
    if (!spec) throw new Error(`unknown method '${m}' (${Object.keys(METHODS).join(', ')})`);
    const register = (moving, fixed) =>
      registerImages(fixed, moving, { ...COMMON, ...spec.options(ds.size) });
    const metrics = await evaluateMethod(ds, register, evalOptions);
    console.log(
      `  ${spec.label}: Dice ${cell(metrics.dice, { scale: 100, withStd: false })}, NCC ${cell(metrics.ncc, { digits: 3, withStd: false })}, folding ${cell(metrics.folding, { digits: 3, withStd: false })} %, ${(metrics.ms.median / 1000).toFixed(1)} s`,
    );
    taskRows.push({ task: key, method: m, label: spec.label, ...metrics });
  }
  rows.push(...taskRows);
  const labelled = ds.labelled;
  tables.push(
    `### ${ds.name} (${ds.size.join('×')}, ${taskRows[0].pairs} test pairs)\n\n${markdownTable(
      [
        'method',
        ...(labelled ? ['Dice × 100', 'HD95 (vox)'] : []),
        'NCC vs truth',
        'SSIM vs truth',
        '% |J| ≤ 0',
        'time (s)',
      ],
      taskRows.map((r) => [
        r.label,
        ...(labelled ? [cell(r.dice, { scale: 100 }), cell(r.hd95)] : []),
        cell(r.ncc, { digits: 3 }),
        cell(r.ssim, { digits: 3 }),
        cell(r.folding, { digits: 3 }),
        r.ms ? (r.ms.median / 1000).toFixed(1) : '',
      ]),
    )}`,
  );
}

mkdirSync(args.out, { recursive: true });
const write = (name, data) => {
  const path = join(args.out, name);
  writeFileSync(`${path}.tmp`, data);
  renameSync(`${path}.tmp`, path);
};
const table = tables.join('\n\n');
console.log(`\n${table}`);
write('table.md', `${table}\n`);
write(
  'results.json',
  `${JSON.stringify({ backend, weights: metadata.description, rows }, null, 1)}\n`,
);
if (figureDataset) {
  write('similarity.png', await similarityFigure(figureDataset));
  console.log(`\nwrote ${join(args.out, 'table.md')}, results.json, similarity.png`);
}
net.dispose();
random.dispose();

/**
 * Fig. 4 in small: on an aligned fixed/moving slice pair (undeformed, so the true
 * correspondence of a voxel is the same voxel), the cosine similarity of the fixed image's
 * feature at one voxel (the strongest edge of the central region) to the moving image's
 * feature at every voxel, for MIND-SSC, the trained MASR-Net and the random-init one. Panels:
 * fixed (red dot), moving (red dot at the true match), MIND, DNS, DNS random init.
 */
async function similarityFigure(ds) {
  const z = ds.test[Math.floor(ds.test.length / 2)];
  const { fixed, moving } = ds.slices.get(z);
  const [H, W] = ds.size;
  const grad = tf.tidy(() => {
    const dx = tf.sub(
      tf.slice(fixed, [0, 1, 0, 0], [1, H - 1, W, 1]),
      tf.slice(fixed, [0, 0, 0, 0], [1, H - 1, W, 1]),
    );
    return tf.abs(
      tf.pad(dx, [
        [0, 0],
        [0, 1],
        [0, 0],
        [0, 0],
      ]),
    );
  });
  const g = await grad.data();
  grad.dispose();
  let best = 0;
  let at = [H >> 1, W >> 1];
  for (let i = Math.floor(H / 3); i < (2 * H) / 3; i++) {
    for (let j = Math.floor(W / 3); j < (2 * W) / 3; j++) {
      if (g[i * W + j] > best) [best, at] = [g[i * W + j], [i, j]];
    }
  }
  const map = async (extract) => {
    const t = tf.tidy(() => {
      const ff = extract(fixed);
      const fm = extract(moving);
      const c = ff.shape[3];
      const v = tf.reshape(tf.slice(ff, [0, at[0], at[1], 0], [1, 1, 1, c]), [1, 1, 1, c]);
      const dot = tf.sum(tf.mul(fm, v), -1);
      const norms = tf.mul(tf.norm(fm, 'euclidean', -1), tf.norm(v));
      return tf.div(dot, tf.maximum(norms, 1e-8));
    });
    const values = await t.data();
    t.dispose();
    return values;
  };
  const panels = [
    await fixed.data(),
    await moving.data(),
    await map((x) => mindSsc(x)),
    await map((x) => net.apply(x)),
    await map((x) => random.apply(x)),
  ];
  const scale = 2;
  const pw = W * scale;
  const ph = H * scale;
  const width = pw * panels.length;
  const rgba = new Uint8Array(width * ph * 4);
  panels.forEach((values, p) => {
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of values) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
    const heat = p >= 2;
    for (let y = 0; y < ph; y++) {
      for (let x = 0; x < pw; x++) {
        const v = (values[Math.floor(y / scale) * W + Math.floor(x / scale)] - lo) / (hi - lo || 1);
        const o = (y * width + p * pw + x) * 4;
        // heat maps: black → red → yellow → white; images: grey
        const rgb = heat
          ? [Math.min(1, 3 * v), Math.min(1, Math.max(0, 3 * v - 1)), Math.max(0, 3 * v - 2)]
          : [v, v, v];
        rgba.set([...rgb.map((c) => Math.round(255 * c)), 255], o);
      }
    }
    // the marked voxel (fixed) or its true match (every other panel): a small cyan cross
    for (let d = -3; d <= 3; d++) {
      for (const [yy, xx] of [
        [at[0] * scale + 1, at[1] * scale + 1 + d],
        [at[0] * scale + 1 + d, at[1] * scale + 1],
      ]) {
        if (yy >= 0 && yy < ph && xx >= 0 && xx < pw)
          rgba.set([0, 255, 255, 255], (yy * width + p * pw + xx) * 4);
      }
    }
  });
  return encodePng({ width, height: ph, data: rgba });
}
