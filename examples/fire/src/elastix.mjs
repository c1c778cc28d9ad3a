/**
 * elastix arms of examples/fire: a 2D pair written as MetaImage (.mhd, identity direction, unit
 * spacing, origin 0, so physical and voxel coordinates agree), registered by elastix with
 * `elastix/affine_2d.txt` (affine) or that and `elastix/bspline_2d.txt` (affine + B-spline),
 * the deformation field read back from `transformix -def all`, in regkit's convention
 * (`warp(moving, forward) ≈ fixed`, component k along spatial axis k).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tf } from '@regkit/core';

const here = dirname(fileURLToPath(import.meta.url));
export const ELASTIX_PARAMS = {
  affine: [join(here, '../elastix/affine_2d.txt')],
  bspline: [join(here, '../elastix/affine_2d.txt'), join(here, '../elastix/bspline_2d.txt')],
};

/** Whether elastix and transformix are on PATH. */
export function elastixAvailable() {
  return ['elastix', 'transformix'].every(
    (tool) => !spawnSync(tool, ['--version'], { encoding: 'utf8' }).error,
  );
}

/** Writes a `[1, H, W, 1]` tensor as float32 MetaImage (x = W fastest). */
function writeMhd(path, image) {
  const [, H, W] = image.shape;
  const raw = path.replace(/\.mhd$/, '.raw');
  writeFileSync(raw, Buffer.from(new Float32Array(image.dataSync()).buffer));
  writeFileSync(
    path,
    [
      'ObjectType = Image',
      'NDims = 2',
      'BinaryData = True',
      'BinaryDataByteOrderMSB = False',
      'CompressedData = False',
      'TransformMatrix = 1 0 0 1',
      'Offset = 0 0',
      'ElementSpacing = 1 1',
      `DimSize = ${W} ${H}`,
      'ElementType = MET_FLOAT',
      `ElementDataFile = ${raw.split('/').pop()}`,
      '',
    ].join('\n'),
  );
}

/** Reads a 2-component MetaImage vector field → regkit field `[1, H, W, 2]` (dy, dx). */
function readField(path) {
  const header = Object.fromEntries(
    readFileSync(path, 'utf8')
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => l.split('=').map((s) => s.trim())),
  );
  const [W, H] = header.DimSize.split(/\s+/).map(Number);
  if (header.CompressedData === 'True') throw new Error(`${path}: compressed data not supported`);
  const buf = readFileSync(join(dirname(path), header.ElementDataFile));
  const type = header.ElementType;
  const values =
    type === 'MET_DOUBLE'
      ? new Float64Array(buf.buffer, buf.byteOffset, buf.length / 8)
      : type === 'MET_FLOAT'
        ? new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4)
        : null;
  if (!values || values.length !== 2 * W * H) {
    throw new Error(`${path}: expected ${2 * W * H} ${type} values`);
  }
  const out = new Float32Array(2 * W * H);
  for (let i = 0; i < W * H; i++) {
    out[2 * i] = values[2 * i + 1]; // along H (axis 0) = elastix's y
    out[2 * i + 1] = values[2 * i]; // along W (axis 1) = elastix's x
  }
  return tf.tensor(out, [1, H, W, 2]);
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) {
    throw new Error(
      `${cmd} ${args.join(' ')} failed (${r.status}): ${(r.stdout ?? '').slice(-2000)}${r.stderr ?? ''}`,
    );
  }
}

/**
 * Registers `moving` to `fixed` (`[1, H, W, 1]`) with elastix (`kind` 'affine' or 'bspline',
 * one thread) → `{ forward, ms }`: the displacement `[1, H, W, 2]` and elastix's wall time
 * (transformix's field export not included).
 */
export function elastixRegister(fixed, moving, kind, { threads = 1 } = {}) {
  const dir = join(tmpdir(), `fire-elastix-${process.pid}-${Date.now()}`);
  mkdirSync(join(dir, 'out'), { recursive: true });
  mkdirSync(join(dir, 'def'), { recursive: true });
  try {
    writeMhd(join(dir, 'fixed.mhd'), fixed);
    writeMhd(join(dir, 'moving.mhd'), moving);
    const params = ELASTIX_PARAMS[kind];
    const t0 = performance.now();
    run('elastix', [
      '-f',
      join(dir, 'fixed.mhd'),
      '-m',
      join(dir, 'moving.mhd'),
      ...params.flatMap((p) => ['-p', p]),
      '-out',
      join(dir, 'out'),
      '-threads',
      String(threads),
    ]);
    const ms = performance.now() - t0;
    const tp = join(dir, 'out', `TransformParameters.${params.length - 1}.txt`);
    run('transformix', [
      '-def',
      'all',
      '-tp',
      tp,
      '-out',
      join(dir, 'def'),
      '-threads',
      String(threads),
    ]);
    return { forward: readField(join(dir, 'def', 'deformationField.mhd')), ms };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
