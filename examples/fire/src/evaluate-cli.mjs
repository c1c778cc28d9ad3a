/**
 * A saved FIRE through the command line on the full 181×217 ITK slice pair, as the CLI test
 * does (`packages/cli/test/cli.test.ts`): `regkit deform` deforms the PD slice by a random
 * B-spline (|u| ≤ 4 voxels, 32-voxel control spacing, seed s), then `regkit register --method
 * fire` registers the undeformed T1 onto it (the CLI resamples both to the network's 64×64
 * grid and the field back, vectors rescaled). Prints, per seed and as mean ± SE over the
 * seeds: the mean |u_true| and |u − u_true| over the head (fixed > 10, voxels of the full
 * slice; the CLI test's `headFieldErrors`), % |J| ≤ 0 and the NCC of the warped T1 against
 * the T1 deformed by u_true. Seed 5 is the CLI test's pair; the default seeds 101–108 are
 * held out from it.
 *
 *   node examples/fire/src/evaluate-cli.mjs [--weights DIR] [--seeds 101,...,108]
 *
 * Needs the CLI built (`pnpm exec turbo run build --filter=@regkit/cli...`).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { initBackend, tf, warp } from '@regkit/core';
import { meanAndSe, pm } from '@regkit/example-common/stats';
import { readDisplacementField, readNifti } from '@regkit/io';
import { ncc } from '@regkit/metrics';
import { BUNDLED_WEIGHTS } from '@regkit/networks';

const here = fileURLToPath(new URL('.', import.meta.url));
const cli = resolve(here, '..', '..', '..', 'packages', 'cli');
const bin = join(cli, 'dist', 'bin.js');
const t1 = join(cli, 'data', 'itk_brainweb_t1_slice.nii.gz');
const pd = join(cli, 'data', 'itk_brainweb_pd_slice.nii.gz');
const { values: args } = parseArgs({
  options: {
    weights: { type: 'string', default: fileURLToPath(BUNDLED_WEIGHTS.fire) },
    seeds: { type: 'string', default: '101,102,103,104,105,106,107,108' },
  },
});
await initBackend('cpu');
const dir = mkdtempSync(join(tmpdir(), 'fire-cli-'));
const regkit = (a) => execFileSync(process.execPath, [bin, ...a], { encoding: 'utf8' });
const rows = [];
const moving = await readNifti(t1);
try {
  for (const seed of args.seeds.split(',').map(Number)) {
    const p = (n) => join(dir, `${seed}_${n}`);
    regkit([
      'deform',
      '--image',
      pd,
      '--out',
      p('fixed.nii.gz'),
      '--true-field',
      p('true.nii.gz'),
      '--max-displacement',
      '4',
      '--control-spacing',
      '32',
      '--seed',
      String(seed),
      '--quiet',
    ]);
    const summary = JSON.parse(
      regkit([
        'register',
        '--fixed',
        p('fixed.nii.gz'),
        '--moving',
        t1,
        '--out',
        p('warped.nii.gz'),
        '--field',
        p('field.nii.gz'),
        '--method',
        'fire',
        '--weights',
        args.weights,
        '--json',
      ]),
    );
    const reference = await readNifti(p('fixed.nii.gz'));
    const truth = await readDisplacementField(p('true.nii.gz'), reference);
    const field = await readDisplacementField(p('field.nii.gz'), reference);
    const shape = truth.shape.slice(1, -1);
    const image = tf.reshape(moving.data, [1, ...shape, 1]);
    const [before, after] = tf.tidy(() => {
      const mask = tf.cast(tf.greater(tf.reshape(reference.data, shape), 10), 'float32');
      const headMean = (t) =>
        tf.div(tf.sum(tf.mul(tf.sqrt(tf.sum(tf.square(t), -1)), mask)), tf.sum(mask)).dataSync()[0];
      return [headMean(truth), headMean(tf.sub(field, truth))];
    });
    const truthT1 = warp(image, truth);
    const warpedT1 = warp(image, field);
    const row = {
      seed,
      before,
      after,
      change: after - before,
      folding: summary.foldingPercent,
      nccBefore: await ncc(image, truthT1),
      nccAfter: await ncc(warpedT1, truthT1),
    };
    rows.push(row);
    console.log(JSON.stringify(row));
    tf.dispose([reference.data, truth, field, image, truthT1, warpedT1]);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
const cell = (k) => {
  const s = meanAndSe(rows.map((r) => r[k]));
  return pm(s.mean, s.se, { digits: 3 });
};
console.log(
  `${args.weights} through the CLI, ${rows.length} pairs (seeds ${args.seeds}), 181×217: mean |u − u_true| in the head ${cell('before')} → ${cell('after')} voxels (paired difference ${cell('change')}); % |J| ≤ 0 ${cell('folding')}; NCC to the truth ${cell('nccBefore')} → ${cell('nccAfter')}`,
);
