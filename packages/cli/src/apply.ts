import { encodeNifti, readDisplacementField, type Volume } from '@regkit/io';
import { UsageError } from './errors.js';
import { checkOutputs, disposeVolumes, OutputTransaction, readInput } from './files.js';
import { warpThroughAffines } from './geometry.js';
import { encodeLabels } from './register.js';

/** Options of the `apply` command. */
export interface ApplyCommandOptions {
  moving: string;
  field: string;
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
 * displacement field. The output lies on the field's grid (or `reference`'s, which must be
 * the same grid); the moving image is mapped through both affines with one interpolation.
 * With `nearest` the labels keep their values and, where it holds them all, the moving
 * file's datatype (else the smallest integer type that does, or float32 for non-integer
 * labels). The output is claimed when written: an output created meanwhile by another run
 * fails this one unless `force`.
 */
export async function applyCommand(o: ApplyCommandOptions): Promise<{ out: string }> {
  checkOutputs(
    { '--out': o.out },
    { '--moving': o.moving, '--field': o.field, '--reference': o.reference },
    !!o.force,
  );
  const moving = await readInput('--moving', o.moving);
  let grid: Volume | null = null;
  try {
    grid = o.reference ? await readInput('--reference', o.reference) : await fieldGrid(o.field);
    const field = await readDisplacementField(o.field, grid);
    try {
      const warped = warpThroughAffines(moving, field, grid, o.nearest ? 'nearest' : 'linear');
      try {
        const tx = new OutputTransaction(!!o.force);
        tx.stageNifti(
          '--out',
          o.out,
          o.nearest ? await encodeLabels(warped, moving.header.datatype) : encodeNifti(warped),
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
