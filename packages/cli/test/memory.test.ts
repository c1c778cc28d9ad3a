import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// Peak memory of a 3D `regkit register`, measured in a child process (its maxRSS, written
// at exit by a preloaded module), so a regression back to hundreds of bytes per voxel fails.
// The peak does not depend on the iteration counts (the wasm heap keeps its high-water mark),
// so the run is short.

const here = fileURLToPath(new URL('.', import.meta.url));
const bin = resolve(here, '..', 'dist', 'bin.js');
const N = 96;
const VOXELS = N * N * N;
/** Node, the wasm backend and the modules, before any image (~150 MB, with headroom for other Node versions). */
const BASELINE_MB = 200;
/**
 * Measured 219 MB in all at 96³ (365 MB before the staged gradient, the hand-written
 * scaling-and-squaring backward pass and the in-place output encoding): a limit of 284 MB.
 */
const MAX_BYTES_PER_VOXEL = 100;

/** A float32 NIfTI-1 volume with an identity sform, gzip-compressed. */
function nifti(values: Float32Array, n: number): Buffer {
  const header = Buffer.alloc(352);
  header.writeInt32LE(348, 0);
  for (const [i, d] of [3, n, n, n, 1, 1, 1, 1].entries()) header.writeInt16LE(d, 40 + 2 * i);
  header.writeInt16LE(16, 70); // float32
  header.writeInt16LE(32, 72);
  for (const [i, p] of [1, 1, 1, 1, 0, 0, 0, 0].entries()) header.writeFloatLE(p, 76 + 4 * i);
  header.writeFloatLE(352, 108);
  header.writeFloatLE(1, 112);
  header.writeInt16LE(1, 254); // sform_code
  for (let r = 0; r < 3; r++) header.writeFloatLE(1, 280 + 16 * r + 4 * r);
  header.write('n+1\0', 344, 'latin1');
  return gzipSync(Buffer.concat([header, Buffer.from(values.buffer)]));
}

/** A smooth blob (centre c, radii r) with a ring of texture, so every level has structure. */
function phantom(shift: number): Float32Array {
  const v = new Float32Array(VOXELS);
  const c = (N - 1) / 2;
  for (let z = 0; z < N; z++) {
    for (let y = 0; y < N; y++) {
      for (let x = 0; x < N; x++) {
        const dx = (x - c - shift) / 30;
        const dy = (y - c) / 26;
        const dz = (z - c + shift / 2) / 22;
        const r2 = dx * dx + dy * dy + dz * dz;
        const inner = Math.exp(-4 * ((dx - 0.3) ** 2 + dy * dy + dz * dz));
        v[(z * N + y) * N + x] = (r2 < 1 ? 100 : 0) + 80 * inner + 10 * Math.sin(x / 3);
      }
    }
  }
  return v;
}

function maxRssOf(args: string[], preload: string): Promise<{ code: number; mb: number }> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      ['--import', preload, bin, ...args],
      { maxBuffer: 1 << 24, env: { ...process.env, FORCE_COLOR: '0' } },
      (err, _stdout, stderr) => {
        const m = /REGKIT_MAXRSS_KB (\d+)/.exec(stderr);
        done({ code: err ? 1 : 0, mb: m ? Number(m[1]) / 1024 : Number.NaN });
      },
    );
  });
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'regkit-mem-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('register memory', () => {
  it(`peaks below ${BASELINE_MB} MB + ${MAX_BYTES_PER_VOXEL} bytes per voxel on a ${N}³ volume`, async () => {
    const fixed = join(dir, 'fixed.nii.gz');
    const moving = join(dir, 'moving.nii.gz');
    writeFileSync(fixed, nifti(phantom(0), N));
    writeFileSync(moving, nifti(phantom(4), N));
    const preload = join(dir, 'maxrss.mjs');
    writeFileSync(
      preload,
      "process.on('exit', () => process.stderr.write('REGKIT_MAXRSS_KB ' + process.resourceUsage().maxRSS + '\\n'));\n",
    );
    const r = await maxRssOf(
      [
        'register',
        '--fixed',
        fixed,
        '--moving',
        moving,
        '--out',
        join(dir, 'out.nii.gz'),
        '--iterations',
        '2,2,2',
        '--affine-iterations',
        '2,2,2',
        '--force',
      ],
      preload,
    );
    expect(r.code).toBe(0);
    const limit = BASELINE_MB + (MAX_BYTES_PER_VOXEL * VOXELS) / 1048576;
    console.info(
      `register ${N}³: peak RSS ${r.mb.toFixed(0)} MB (${((r.mb * 1048576) / VOXELS).toFixed(0)} bytes/voxel, limit ${limit.toFixed(0)} MB)`,
    );
    expect(r.mb).toBeGreaterThan(0);
    expect(r.mb).toBeLessThanOrEqual(limit);
  }, 300_000);

  // the target on a real brain, everything counted (Node and the modules too):
  // the bundled Colin27 T1 (181×217×181) onto a deformed copy of itself, with a field output.
  // ~1 min and ~0.7 GB: run with REGKIT_BRAIN_TESTS=1 (CI does, alone)
  it.skipIf(!process.env.REGKIT_BRAIN_TESTS)(
    'peaks at ≤ 100 bytes per voxel on the Colin27 brain (REGKIT_BRAIN_TESTS=1)',
    async () => {
      const colin = resolve(here, '..', 'data', 'colin27_ch2_t1.nii.gz');
      const fixed = join(dir, 'colin_fixed.nii.gz');
      const preload = join(dir, 'maxrss.mjs');
      writeFileSync(
        preload,
        "process.on('exit', () => process.stderr.write('REGKIT_MAXRSS_KB ' + process.resourceUsage().maxRSS + '\\n'));\n",
      );
      const deform = await maxRssOf(
        [
          'deform',
          '--image',
          colin,
          '--out',
          fixed,
          '--true-field',
          join(dir, 'true.nii.gz'),
          '--seed',
          '3',
          '--force',
        ],
        preload,
      );
      expect(deform.code).toBe(0);
      const voxels = 181 * 217 * 181;
      const r = await maxRssOf(
        [
          'register',
          '--fixed',
          fixed,
          '--moving',
          colin,
          '--out',
          join(dir, 'colin_out.nii.gz'),
          '--field',
          join(dir, 'colin_field.nii.gz'),
          '--iterations',
          '2,2,2',
          '--affine-iterations',
          '2,2,2',
          '--force',
        ],
        preload,
      );
      expect(r.code).toBe(0);
      const perVoxel = (r.mb * 1048576) / voxels;
      console.info(
        `register Colin27 181×217×181: peak RSS ${r.mb.toFixed(0)} MB (${perVoxel.toFixed(1)} bytes/voxel)`,
      );
      expect(perVoxel).toBeGreaterThan(0);
      expect(perVoxel).toBeLessThanOrEqual(100);
    },
    600_000,
  );
});
