import { existsSync } from 'node:fs';
import type { tf } from '@regkit/core';
import {
  itkToVoxelAffine,
  RegkitIOError,
  readDisplacementField,
  readItkAffine,
  type Volume,
} from '@regkit/io';
import { UsageError } from './errors.js';
import {
  checkOutputs,
  disposeVolumes,
  encodeImageFor,
  OutputTransaction,
  readInput,
} from './files.js';
import { affineThenField, warpThroughAffines } from './geometry.js';
import { encodeLabels } from './register.js';

/** Options of the `apply` command. */
export interface ApplyCommandOptions {
  moving: string;
  /** ITK/ANTs displacement field (applied after `affine` when both are given). */
  field?: string;
  /** ITK/ANTs affine transform file (`.txt`/`.tfm` ITK text or ANTs `.mat`). */
  affine?: string;
  out: string;
  reference?: string;
  nearest?: boolean;
  force?: boolean;
}

/** The grid of a field file: its affine and spatial shape, as a one-channel volume. */
async function fieldGrid(path: string): Promise<Volume> {
  const v = await readInput('--field', path);
  const nd = v.data.rank - 2;
  const c = v.data.shape[v.data.rank - 1];
  if (c !== nd) {
    v.data.dispose();
    throw new UsageError(
      `--field ${path} is not a displacement field: ${nd}D with ${c} components per voxel (ITK/ANTs fields are 5D NIfTI [nx, ny, nz, 1, ndim])`,
    );
  }
  return v;
}

/**
 * `regkit apply`: warps an image (or, with `nearest`, a label map) by an ITK/ANTs
 * displacement field, an ITK/ANTs affine transform file, or both — the field then the affine
 * on points, x ↦ a(x + u(x)), as `antsApplyTransforms -t field -t affine` and as
 * `regkit register` composes its stages. The output lies on the field's grid (or
 * `reference`'s, which must be the same grid; with an affine alone `reference` is required);
 * the moving image is mapped through both affines with one interpolation.
 * With `nearest` the labels keep their values and, where it holds them all, the moving
 * file's datatype (else the smallest integer type that does, or float32 for non-integer
 * labels). The output is claimed when written: an output created meanwhile by another run
 * fails this one unless `force`.
 */
export async function applyCommand(o: ApplyCommandOptions): Promise<{ out: string }> {
  if (!o.field && !o.affine) {
    throw new UsageError('apply needs --field <file>, --affine <file>, or both');
  }
  if (o.affine && !o.field && !o.reference) {
    throw new UsageError(
      '--affine without --field needs --reference <file>: the grid of the output (the fixed image)',
    );
  }
  if (o.affine && !existsSync(o.affine))
    throw new UsageError(`--affine ${o.affine} does not exist`);
  checkOutputs(
    { '--out': o.out },
    {
      '--moving': o.moving,
      '--field': o.field,
      '--affine': o.affine,
      '--reference': o.reference,
    },
    !!o.force,
  );
  const itk = o.affine
    ? await readItkAffine(o.affine).catch((e: unknown) => {
        throw e instanceof RegkitIOError && e.code === 'TRANSFORM'
          ? new UsageError(`--affine ${e.message}`)
          : e;
      })
    : null;
  const moving = await readInput('--moving', o.moving);
  let grid: Volume | null = null;
  try {
    grid = o.reference ? await readInput('--reference', o.reference) : await fieldGrid(o.field!);
    const spatial = grid.data.shape.slice(1, -1);
    if (itk && itk.dimension !== spatial.length) {
      throw new UsageError(
        `--affine ${o.affine} is a ${itk.dimension}D transform but the output grid (${o.reference ? `--reference ${o.reference}` : `--field ${o.field}`}) is ${spatial.length}D`,
      );
    }
    const u = o.field ? await readDisplacementField(o.field, grid) : null;
    let field: tf.Tensor;
    if (itk) {
      // the affine on the output grid: grid voxel → grid-voxel position of the moving point
      const a = itkToVoxelAffine(itk, grid, grid);
      field = affineThenField(a, u, spatial);
      a.dispose();
      u?.dispose();
    } else field = u!;
    try {
      const warped = warpThroughAffines(moving, field, grid, o.nearest ? 'nearest' : 'linear');
      try {
        const tx = new OutputTransaction(!!o.force);
        tx.stageNifti(
          '--out',
          o.out,
          o.nearest
            ? await encodeLabels(warped, moving.header.datatype, o.out)
            : encodeImageFor(o.out, warped),
        );
        await tx.commit();
      } finally {
        warped.data.dispose();
      }
    } finally {
      field.dispose();
    }
    return { out: o.out };
  } finally {
    disposeVolumes(moving, grid);
  }
}
