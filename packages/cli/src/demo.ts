import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gaussianSmooth, randomSmoothField, tf, warp } from '@regkit/core';
import {
  defaultHeader,
  readNifti,
  resampleToReference,
  saveRegistrationFigure,
  type Volume,
  volumeLike,
  writeDisplacementField,
  writeNifti,
} from '@regkit/io';
import { dice, foldingPercent, intensityClasses } from '@regkit/metrics';
import {
  normalizeIntensity,
  registerImages,
  type SimilarityName as Similarity,
} from '@regkit/register';
import { UsageError } from './errors.js';
import { presentLabels } from './evaluate.js';
import { disposeVolumes, removeStaleTemporaries } from './files.js';
import type { Progress } from './progress.js';
import { writeLabels } from './register.js';

/** Re-exported from `@regkit/metrics`, where it lives (the web app uses it too). */
export { intensityClasses };

/** The bundled demo images (see `data/README.md` for their sources and licences). */
export function demoDataDir(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', 'data');
}

/** Options of `regkit demo`. */
export interface DemoOptions {
  /** Output folder (default `regkit-demo`). */
  outDir?: string;
  /** Cases to run (default both). */
  cases?: Array<'2d' | '3d'>;
  /** Voxel size of the 3D case in mm (default 2: Colin27 downsampled from 1 mm). */
  resolution3d?: number;
  /** Seed of the synthetic deformations (default 7). */
  seed?: number;
  force?: boolean;
}

/** Result of one demo case. */
export interface DemoCaseSummary {
  name: string;
  description: string;
  shape: number[];
  spacing: number[];
  similarity: Similarity;
  labels: number;
  diceBefore: number;
  diceAfter: number;
  /** Mean |u − u_true| over the foreground (voxels), and the mean |u_true| there (the error before). */
  displacementErrorBefore: number;
  displacementErrorAfter: number;
  foldingPercent: number;
  seconds: number;
  outputs: string[];
}

/** A reference grid over the same extent as `v` with voxels `mm` wide (same orientation and corner). */
function coarseGrid(v: Volume, mm: number): Volume {
  const spatial = v.data.shape.slice(1, -1);
  const factors = v.spacing.map((s) => mm / s);
  const shape = spatial.map((s, k) => Math.floor(((s - 1) * v.spacing[k]!) / mm) + 1);
  const affine = v.affine.slice();
  for (let r = 0; r < 3; r++)
    for (let c = 0; c < spatial.length; c++) affine[r * 4 + c] = v.affine[r * 4 + c]! * factors[c]!;
  return {
    data: tf.zeros([1, ...shape, 1]),
    affine,
    spacing: spatial.map(() => mm),
    header: defaultHeader(shape, 1),
  };
}

async function meanNorm(u: tf.Tensor, mask: tf.Tensor): Promise<number> {
  const t = tf.tidy(() => {
    const n = tf.sqrt(tf.sum(tf.square(u), -1, true));
    return tf.div(tf.sum(tf.mul(n, mask)), tf.maximum(tf.sum(mask), 1));
  });
  const v = (await t.data())[0]!;
  t.dispose();
  return v;
}

function meanOf(values: number[]): number {
  const f = values.filter((x) => Number.isFinite(x));
  return f.reduce((a, b) => a + b, 0) / Math.max(1, f.length);
}

interface CaseInput {
  name: string;
  description: string;
  fixedSource: Volume;
  movingSource: Volume;
  labels: Volume;
  similarity: Similarity;
  maxDisplacement: number;
  controlSpacing: number;
  seed: number;
}

async function runCase(c: CaseInput, dir: string, progress: Progress): Promise<DemoCaseSummary> {
  const t0 = performance.now();
  mkdirSync(dir, { recursive: true });
  removeStaleTemporaries(dir);
  const spatial = c.fixedSource.data.shape.slice(1, -1);
  const keep: tf.Tensor[] = [];
  try {
    // the known answer: fixed(x) = source(x + v(x)), so registering moving → fixed recovers v
    const truth = randomSmoothField(spatial, {
      maxDisplacement: c.maxDisplacement,
      controlSpacing: c.controlSpacing,
      seed: c.seed,
    });
    keep.push(truth);
    const fixedData = warp(c.fixedSource.data, truth);
    const fixedLabelsData = warp(c.labels.data, truth, { interpolation: 'nearest' });
    keep.push(fixedData, fixedLabelsData);
    const fixed = volumeLike(c.fixedSource, fixedData);
    const f = await normalizeIntensity(fixedData);
    const m = await normalizeIntensity(c.movingSource.data);
    keep.push(f, m);
    let started = false;
    const result = await registerImages(f, m, {
      similarity: c.similarity,
      seed: c.seed,
      onProgress: (p) => {
        if (!started) progress.start(`${c.name}: registering`, p.total);
        started = true;
        progress.update(p.done, `level ${p.level}/${p.levels}`);
      },
    });
    progress.stop();
    result.velocity?.dispose();
    const field = result.forward;
    keep.push(field);
    const warpedData = warp(c.movingSource.data, field);
    const warpedLabelsData = warp(c.labels.data, field, { interpolation: 'nearest' });
    keep.push(warpedData, warpedLabelsData);
    const seconds = (performance.now() - t0) / 1000;

    const labelIds = await presentLabels(c.labels.data);
    const before = await dice(fixedLabelsData, c.labels.data, { labels: labelIds });
    const after = await dice(fixedLabelsData, warpedLabelsData, { labels: labelIds });
    const mask = tf.tidy(() => tf.cast(tf.greater(fixedLabelsData, 0), 'float32'));
    keep.push(mask);
    const errBefore = await meanNorm(truth, mask);
    const diff = tf.sub(field, truth);
    keep.push(diff);
    const errAfter = await meanNorm(diff, mask);
    const folding = await foldingPercent(field);

    const out = (n: string) => join(dir, n);
    const files: Array<[string, () => Promise<void>]> = [
      ['fixed.nii.gz', () => writeNifti(out('fixed.nii.gz'), fixed)],
      ['moving.nii.gz', () => writeNifti(out('moving.nii.gz'), c.movingSource)],
      [
        'warped.nii.gz',
        () => writeNifti(out('warped.nii.gz'), volumeLike(c.fixedSource, warpedData)),
      ],
      [
        'fixed_labels.nii.gz',
        () => writeLabels(out('fixed_labels.nii.gz'), volumeLike(c.fixedSource, fixedLabelsData)),
      ],
      ['moving_labels.nii.gz', () => writeLabels(out('moving_labels.nii.gz'), c.labels)],
      [
        'warped_labels.nii.gz',
        () => writeLabels(out('warped_labels.nii.gz'), volumeLike(c.fixedSource, warpedLabelsData)),
      ],
      ['field.nii.gz', () => writeDisplacementField(out('field.nii.gz'), field, fixed)],
      ['true_field.nii.gz', () => writeDisplacementField(out('true_field.nii.gz'), truth, fixed)],
      [
        'figure.png',
        () =>
          saveRegistrationFigure(
            out('figure.png'),
            {
              fixed,
              moving: volumeLike(c.fixedSource, c.movingSource.data),
              warped: volumeLike(c.fixedSource, warpedData),
              field,
              fixedLabels: fixedLabelsData,
              movingLabels: c.labels.data,
              warpedLabels: warpedLabelsData,
            },
            {
              title: `regkit demo ${c.name}: ${c.description}`,
              figures: {
                similarity: `${c.similarity} loss at the finest level`,
                ...(result.levels.length
                  ? { similarityAfter: result.levels[result.levels.length - 1]!.similarity }
                  : {}),
                diceBefore: meanOf(before),
                diceAfter: meanOf(after),
                labels: labelIds.length,
                foldingPercent: folding,
                seconds,
              },
              notes: [
                `mean displacement error in the labelled voxels: ${errBefore.toFixed(2)} → ${errAfter.toFixed(2)} voxels`,
              ],
            },
          ),
      ],
    ];
    for (const [, write] of files) await write();
    return {
      name: c.name,
      description: c.description,
      shape: spatial,
      spacing: c.fixedSource.spacing.map((s) => +s.toFixed(3)),
      similarity: c.similarity,
      labels: labelIds.length,
      diceBefore: meanOf(before),
      diceAfter: meanOf(after),
      displacementErrorBefore: errBefore,
      displacementErrorAfter: errAfter,
      foldingPercent: folding,
      seconds,
      outputs: files.map(([n]) => out(n)),
    };
  } finally {
    progress.stop();
    for (const t of keep) t.dispose();
  }
}

/**
 * `regkit demo`: two registration problems with a known answer on the bundled images —
 * (1) 2D: T1 slice → a proton-density slice deformed by a seeded random smooth field (MI);
 * (2) 3D: Colin27 T1 (downsampled to `resolution3d` mm) → itself deformed by a seeded random
 * smooth field (local NCC), scored on the 116 AAL labels. Writes NIfTI outputs, the fields
 * (ITK/ANTs convention) and PNG previews under `outDir/<case>/`.
 */
export async function demoCommand(o: DemoOptions, progress: Progress): Promise<DemoCaseSummary[]> {
  const outDir = o.outDir ?? 'regkit-demo';
  const cases = o.cases ?? ['2d', '3d'];
  const seed = o.seed ?? 7;
  const mm = o.resolution3d ?? 2;
  if (!(mm >= 1 && mm <= 8))
    throw new UsageError(`--resolution-3d must be in [1, 8] mm, got ${mm}`);
  const data = demoDataDir();
  const dirs = cases.map((c) => join(outDir, c === '2d' ? '2d-t1-to-pd' : '3d-colin27'));
  for (const d of dirs) {
    if (!o.force && existsSync(d)) throw new UsageError(`${d} exists: pass --force to replace it`);
  }
  const summaries: DemoCaseSummary[] = [];
  if (cases.includes('2d')) {
    const t1 = await readNifti(join(data, 'itk_brainweb_t1_slice.nii.gz'));
    const pd = await readNifti(join(data, 'itk_brainweb_pd_slice.nii.gz'));
    const labels = volumeLike(t1, await intensityClasses(t1.data));
    try {
      summaries.push(
        await runCase(
          {
            name: '2d-t1-to-pd',
            description:
              'ITK BrainWeb slice: T1 → proton density deformed by a random smooth field; Dice of automatic T1 intensity classes',
            fixedSource: pd,
            movingSource: t1,
            labels,
            similarity: 'mi',
            maxDisplacement: 6,
            controlSpacing: 32,
            seed,
          },
          dirs[cases.indexOf('2d')]!,
          progress,
        ),
      );
    } finally {
      disposeVolumes(t1, pd, labels);
    }
  }
  if (cases.includes('3d')) {
    const t1 = await readNifti(join(data, 'colin27_ch2_t1.nii.gz'));
    const aal = await readNifti(join(data, 'colin27_aal_labels.nii.gz'));
    const grid = coarseGrid(t1, mm);
    const sigma = t1.spacing.map((s) => Math.max(0, (mm / s - 1) * 0.5));
    const smooth = volumeLike(t1, gaussianSmooth(t1.data, sigma));
    const t1c = resampleToReference(smooth, grid);
    const aalc = resampleToReference(aal, grid, { interpolation: 'nearest' });
    disposeVolumes(t1, aal, smooth, grid);
    try {
      summaries.push(
        await runCase(
          {
            name: '3d-colin27',
            description: `Colin27 T1 at ${mm} mm → itself deformed by a random smooth field; Dice of the 116 AAL labels`,
            fixedSource: t1c,
            movingSource: t1c,
            labels: aalc,
            similarity: 'lncc',
            maxDisplacement: 4,
            controlSpacing: 16,
            seed: seed + 1,
          },
          dirs[cases.indexOf('3d')]!,
          progress,
        ),
      );
    } finally {
      disposeVolumes(t1c, aalc);
    }
  }
  return summaries;
}
