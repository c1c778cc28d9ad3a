import { resizeField, resizeImage, tf } from '@regkit/core';
import {
  type NiftiWriteDatatype,
  saveSlicePng,
  type Volume,
  volumeLike,
  writeDisplacementField,
  writeNifti,
} from '@regkit/io';
import { foldingPercent } from '@regkit/metrics';
import { BUNDLED_WEIGHTS, bundledWeights, loadRegistrationNetwork } from '@regkit/networks';
import {
  normalizeIntensity,
  type RegisterImagesOptions,
  registerImages,
  type SimilarityName as Similarity,
  type TransformModel,
} from '@regkit/register';
import { UsageError } from './errors.js';
import { checkOutputs, disposeVolumes, readInput } from './files.js';
import { sameGrid, warpThroughAffines } from './geometry.js';
import type { Progress } from './progress.js';

/** Options of the `register` command (the parsed command line). */
export interface RegisterCommandOptions {
  fixed: string;
  moving: string;
  out: string;
  field?: string;
  inverseField?: string | boolean;
  similarity?: string;
  transform?: string;
  levels?: number;
  iterations?: number[];
  learningRate?: number;
  regularisation?: number;
  skipFinest?: number;
  seed?: number;
  movingLabels?: string;
  outLabels?: string;
  png?: string;
  force?: boolean;
  /** Register with a trained network of this method instead of instance optimisation. */
  method?: string;
  /** Directory of the trained network (`saveRegistrationNetwork`), with `method`. */
  weights?: string;
}

/** What `register` reports (printed with `--json`). */
export interface RegisterSummary {
  fixed: string;
  moving: string;
  /** `'instance'` (optimisation) or the network method. */
  method: string;
  /** The network directory, when a network registered. */
  weights?: string;
  similarity: Similarity;
  transform: TransformModel;
  resampled: boolean;
  shape: number[];
  levels: { shape: number[]; similarity: number; iterations: number }[];
  foldingPercent: number;
  seconds: number;
  outputs: Record<string, string>;
}

/** The on-disk type that holds integer labels of this range. */
export function labelDatatype(max: number, min: number): NiftiWriteDatatype {
  if (min >= 0 && max <= 255) return 'uint8';
  if (min >= -32768 && max <= 32767) return 'int16';
  return 'int32';
}

/** Default name of the inverse field: `field.nii.gz` → `field_inverse.nii.gz`. */
export function inverseFieldPath(field: string): string {
  const m = /^(.*?)(\.nii(\.gz)?)?$/i.exec(field)!;
  return `${m[1]}_inverse${m[2] ?? '.nii.gz'}`;
}

/** Writes integer labels (datatype chosen from their range). */
export async function writeLabels(path: string, volume: Volume): Promise<void> {
  const [min, max] = tf.tidy(() => [tf.min(volume.data), tf.max(volume.data)]);
  const lo = (await min!.data())[0]!;
  const hi = (await max!.data())[0]!;
  min!.dispose();
  max!.dispose();
  await writeNifti(path, volume, { datatype: labelDatatype(hi, lo) });
}

/**
 * Registers normalised `moving` to `fixed` (`[1, ...S, 1]`, same grid) with the trained
 * network in `weights`: inputs resampled to the network's grid, the predicted displacement(s)
 * resampled back to S (vectors rescaled).
 */
async function registerWithNetwork(
  method: string,
  weights: string,
  fixed: tf.Tensor,
  moving: tf.Tensor,
  normalise: (image: tf.Tensor, lower: number, upper: number) => Promise<tf.Tensor>,
  fixedRaw: tf.Tensor,
  movingRaw: tf.Tensor,
): Promise<{ field: tf.Tensor; inverseField?: tf.Tensor }> {
  const net = await loadRegistrationNetwork(weights);
  const toDispose: tf.Tensor[] = [];
  try {
    const { inputShape, normalisation } = net.metadata;
    if (net.metadata.method !== method) {
      throw new UsageError(
        `--weights ${weights} holds a ${net.metadata.method} network, not ${method}`,
      );
    }
    const shape = fixed.shape.slice(1, -1);
    if (shape.length !== inputShape.length) {
      throw new UsageError(
        `the ${method} network in ${weights} registers ${inputShape.length}D images (${inputShape.join('×')}); the images are ${shape.length}D (${shape.join('×')})`,
      );
    }
    let f = fixed;
    let m = moving;
    if (normalisation) {
      f = await normalise(fixedRaw, normalisation.lower, normalisation.upper);
      m = await normalise(movingRaw, normalisation.lower, normalisation.upper);
      toDispose.push(f, m);
    }
    const same = tf.util.arraysEqual(shape, inputShape);
    return tf.tidy(() => {
      const fi = same ? f : resizeImage(f, inputShape);
      const mi = same ? m : resizeImage(m, inputShape);
      const p = net.predict(mi, fi);
      const back = (u: tf.Tensor) => (same ? u : resizeField(u, shape));
      return p.inverse
        ? { field: back(p.forward), inverseField: back(p.inverse) }
        : { field: back(p.forward) };
    });
  } finally {
    tf.dispose(toDispose);
    net.dispose();
  }
}

/**
 * `regkit register`: registration of a moving image to a fixed one by instance optimisation
 * or, with `method` and `weights`, by a trained network, in the fixed image's grid (the
 * moving image is mapped through both affines when the grids differ). Writes the warped image and, when asked, the ITK/ANTs displacement field, its
 * inverse, warped labels and a PNG preview.
 */
export async function registerCommand(
  o: RegisterCommandOptions,
  progress: Progress,
): Promise<RegisterSummary> {
  const similarity = (o.similarity ?? 'lncc') as Similarity;
  if (!['lncc', 'mi', 'mind', 'mse'].includes(similarity)) {
    throw new UsageError(`--similarity must be lncc, mi, mind or mse, got '${o.similarity}'`);
  }
  const transform = (o.transform ?? 'velocity') as TransformModel;
  if (!['velocity', 'displacement'].includes(transform)) {
    throw new UsageError(`--transform must be velocity or displacement, got '${o.transform}'`);
  }
  if (o.method && !o.weights) {
    const bundled = await bundledWeights(o.method);
    if (!bundled) {
      throw new UsageError(
        `--method ${o.method} needs --weights <dir> (weights are bundled for: ${Object.keys(BUNDLED_WEIGHTS).join(', ')})`,
      );
    }
    o = { ...o, weights: bundled };
  }
  if (o.weights && !o.method) throw new UsageError('--weights needs --method <name>');
  if (o.outLabels && !o.movingLabels) throw new UsageError('--out-labels needs --moving-labels');
  if (o.movingLabels && !o.outLabels) throw new UsageError('--moving-labels needs --out-labels');
  if (o.inverseField && !o.field && typeof o.inverseField !== 'string') {
    throw new UsageError('--inverse-field without a path needs --field (it is written beside it)');
  }
  const inversePath =
    typeof o.inverseField === 'string'
      ? o.inverseField
      : o.inverseField && o.field
        ? inverseFieldPath(o.field)
        : undefined;
  const outputs = {
    '--out': o.out,
    '--field': o.field,
    '--inverse-field': inversePath,
    '--out-labels': o.outLabels,
    '--png': o.png,
  };
  checkOutputs(
    outputs,
    { '--fixed': o.fixed, '--moving': o.moving, '--moving-labels': o.movingLabels },
    !!o.force,
  );
  const t0 = performance.now();
  const fixed = await readInput('--fixed', o.fixed);
  const moving = await readInput('--moving', o.moving);
  const labels = o.movingLabels ? await readInput('--moving-labels', o.movingLabels) : null;
  const toDispose: tf.Tensor[] = [];
  try {
    const fs = fixed.data.shape.slice(1, -1);
    const ms = moving.data.shape.slice(1, -1);
    if (fs.length !== ms.length) {
      throw new UsageError(
        `--fixed ${o.fixed} is ${fs.length}D [${fs.join(', ')}] but --moving ${o.moving} is ${ms.length}D [${ms.join(', ')}]`,
      );
    }
    for (const [name, v, path] of [
      ['--fixed', fixed, o.fixed],
      ['--moving', moving, o.moving],
    ] as const) {
      const c = v.data.shape[v.data.rank - 1];
      if (c !== 1) throw new UsageError(`${name} ${path} has ${c} channels; register needs one`);
    }
    const resampled = !sameGrid(fixed, moving);
    const movingOnFixed = resampled ? warpThroughAffines(moving, null, fixed) : null;
    if (movingOnFixed) toDispose.push(movingOnFixed.data);
    const f = await normalizeIntensity(fixed.data);
    const m = await normalizeIntensity((movingOnFixed ?? moving).data);
    toDispose.push(f, m);
    let started = false;
    const options: RegisterImagesOptions = {
      similarity,
      transform,
      inverse: !!inversePath,
      onProgress: (p) => {
        if (!started) progress.start('registering', p.total);
        started = true;
        progress.update(
          p.done,
          `level ${p.level}/${p.levels} ${similarity} ${p.similarity.toFixed(4)}`,
        );
      },
    };
    if (o.levels !== undefined) options.levels = o.levels;
    if (o.iterations !== undefined) options.iterations = o.iterations;
    if (o.learningRate !== undefined) options.learningRate = o.learningRate;
    if (o.regularisation !== undefined) options.regularisationWeight = o.regularisation;
    if (o.skipFinest !== undefined) options.skipFinest = o.skipFinest;
    if (o.seed !== undefined) options.seed = o.seed;
    let result: {
      field: tf.Tensor;
      inverseField?: tf.Tensor;
      levels: { shape: number[]; similarity: number; iterations: number }[];
    };
    if (o.method) {
      progress.start(`registering with ${o.method}`, 1);
      const movingRaw = (movingOnFixed ?? moving).data;
      const r = await registerWithNetwork(
        o.method,
        o.weights!,
        f,
        m,
        normalizeIntensity,
        fixed.data,
        movingRaw,
      );
      progress.update(1, o.method);
      result = { ...r, levels: [] };
      if (inversePath && !r.inverseField) {
        throw new UsageError(`the ${o.method} network gives no inverse; drop --inverse-field`);
      }
    } else {
      const r = await registerImages(f, m, options);
      if (r.velocity) r.velocity.dispose();
      result = r.inverse
        ? { field: r.forward, inverseField: r.inverse, levels: r.levels }
        : { field: r.forward, levels: r.levels };
    }
    progress.stop();
    toDispose.push(result.field);
    if (result.inverseField) toDispose.push(result.inverseField);
    const warped = warpThroughAffines(moving, result.field, fixed);
    toDispose.push(warped.data);
    await writeNifti(o.out, warped);
    const written: Record<string, string> = { out: o.out };
    if (o.field) {
      await writeDisplacementField(o.field, result.field, fixed);
      written.field = o.field;
    }
    if (inversePath && result.inverseField) {
      await writeDisplacementField(inversePath, result.inverseField, fixed);
      written.inverseField = inversePath;
    }
    if (labels && o.outLabels) {
      const warpedLabels = warpThroughAffines(labels, result.field, fixed, 'nearest');
      toDispose.push(warpedLabels.data);
      await writeLabels(o.outLabels, warpedLabels);
      written.outLabels = o.outLabels;
    }
    if (o.png) {
      const grid = volumeLike(fixed, result.field);
      await saveSlicePng(o.png, warped, { checkerboard: fixed, grid: grid.data, tiles: 8 });
      written.png = o.png;
    }
    const folding = await foldingPercent(result.field);
    return {
      fixed: o.fixed,
      moving: o.moving,
      method: o.method ?? 'instance',
      ...(o.weights ? { weights: o.weights } : {}),
      similarity,
      transform,
      resampled,
      shape: fs,
      levels: result.levels.map(({ shape, similarity: s, iterations }) => ({
        shape,
        similarity: s,
        iterations,
      })),
      foldingPercent: folding,
      seconds: (performance.now() - t0) / 1000,
      outputs: written,
    };
  } finally {
    progress.stop();
    for (const t of toDispose) t.dispose();
    disposeVolumes(fixed, moving, labels);
  }
}
