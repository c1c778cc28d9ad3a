import { randomSmoothField, tf, warp } from '@regkit/core';
import { volumeLike } from '@regkit/io';
import { UsageError } from './errors.js';
import {
  checkOutputs,
  disposeVolumes,
  encodeFieldFor,
  encodeImageFor,
  OutputTransaction,
  readInput,
} from './files.js';
import { encodeLabels } from './register.js';

/** Options of the `deform` command. */
export interface DeformCommandOptions {
  image: string;
  out: string;
  trueField: string;
  labels?: string;
  outLabels?: string;
  maxDisplacement?: number;
  controlSpacing?: number;
  seed?: number;
  force?: boolean;
}

/**
 * `regkit deform`: makes a registration problem with a known answer. Writes
 * out(x) = image(x + v(x)) for a seeded random smooth B-spline displacement v (and the labels
 * warped with nearest neighbour); registering `image` (moving) to `out` (fixed) should
 * recover v, written as an ITK/ANTs field to `trueField`. The outputs are written together
 * or not at all.
 */
export async function deformCommand(
  o: DeformCommandOptions,
): Promise<{ maxDisplacement: number; controlSpacing: number; seed: number }> {
  if (o.outLabels && !o.labels) throw new UsageError('--out-labels needs --labels');
  if (o.labels && !o.outLabels) throw new UsageError('--labels needs --out-labels');
  const maxDisplacement = o.maxDisplacement ?? 4;
  const controlSpacing = o.controlSpacing ?? 16;
  const seed = o.seed ?? 1;
  checkOutputs(
    { '--out': o.out, '--true-field': o.trueField, '--out-labels': o.outLabels },
    { '--image': o.image, '--labels': o.labels },
    !!o.force,
  );
  const image = await readInput('--image', o.image);
  const labels = o.labels ? await readInput('--labels', o.labels) : null;
  const keep: tf.Tensor[] = [];
  try {
    const spatial = image.data.shape.slice(1, -1);
    if (labels && !tf.util.arraysEqual(labels.data.shape.slice(1, -1), spatial)) {
      throw new UsageError(`--labels ${o.labels} is not on the grid of --image ${o.image}`);
    }
    const v = randomSmoothField(spatial, { maxDisplacement, controlSpacing, seed });
    keep.push(v);
    const out = warp(image.data, v);
    keep.push(out);
    const tx = new OutputTransaction(!!o.force);
    tx.stageNifti('--out', o.out, () => encodeImageFor(o.out, volumeLike(image, out)));
    tx.stageNifti('--true-field', o.trueField, () => encodeFieldFor(o.trueField, v, image));
    if (labels && o.outLabels) {
      const l = warp(labels.data, v, { interpolation: 'nearest' });
      keep.push(l);
      tx.stageNifti(
        '--out-labels',
        o.outLabels,
        await encodeLabels(volumeLike(image, l), labels.header.datatype, o.outLabels),
      );
    }
    await tx.commit();
    return { maxDisplacement, controlSpacing, seed };
  } finally {
    for (const t of keep) t.dispose();
    disposeVolumes(image, labels);
  }
}
