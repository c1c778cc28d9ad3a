/**
 * Peer test against nibabel's own test corpus (`nibabel/tests/data`): every NIfTI-1/2 and
 * Analyze / NIfTI pair file there is read by nibabel (test/fixtures/nibabel_corpus.py, run by
 * /usr/bin/python3) and by readNifti; shapes, affines and voxel values (NaN-aware) must agree.
 * Skipped, with the reason in the test name and on stderr, when /usr/bin/python3, nibabel or
 * the corpus folder is missing (Debian: `apt-get install python3-nibabel`).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { initBackend } from '@regkit/core';
import { RegkitIOError, readNifti } from '@regkit/io';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectClose, hasNibabel, tempDir } from './helpers.js';

interface CorpusFile {
  file: string;
  read: string;
  cls?: string;
  note?: string;
  generatedImage?: boolean;
  shape?: number[];
  affine?: number[] | null;
  data?: string;
  error?: string;
}

const SCRIPT = fileURLToPath(new URL('./fixtures/nibabel_corpus.py', import.meta.url));

/** The corpus folder, or why the test cannot run. */
function corpusDir(): { dir: string } | { reason: string } {
  if (!existsSync('/usr/bin/python3')) return { reason: '/usr/bin/python3 not found' };
  if (!hasNibabel()) return { reason: 'nibabel (and numpy) not importable by /usr/bin/python3' };
  try {
    const dir = execFileSync(
      '/usr/bin/python3',
      [
        '-c',
        'import nibabel, os; print(os.path.join(os.path.dirname(nibabel.__file__), "tests", "data"))',
      ],
      { encoding: 'utf8' },
    ).trim();
    return existsSync(dir) ? { dir } : { reason: `nibabel's test data folder ${dir} is absent` };
  } catch (e) {
    return { reason: `cannot locate nibabel (${(e as Error).message})` };
  }
}

const where = corpusDir();
const skipReason = 'reason' in where ? where.reason : '';
if (skipReason) console.warn(`nibabel corpus peer test SKIPPED: ${skipReason}`);

const tmp = tempDir();
beforeAll(async () => {
  expect(await initBackend('cpu')).toBe('cpu');
});
afterAll(() => tmp.cleanup());

function decode(b64: string): Float64Array {
  const buf = Buffer.from(b64, 'base64');
  const out = new Float64Array(buf.length / 8);
  for (let i = 0; i < out.length; i++) out[i] = buf.readDoubleLE(i * 8);
  return out;
}

describe('nibabel test corpus', () => {
  it.skipIf(!!skipReason)(
    `every NIfTI-1/2 and Analyze file reads as nib.load reads it${skipReason ? ` (SKIPPED: ${skipReason})` : ''}`,
    async () => {
      const out = execFileSync('/usr/bin/python3', [SCRIPT, tmp.dir], {
        encoding: 'utf8',
        maxBuffer: 256 * 1024 * 1024,
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      const corpus = JSON.parse(out) as { dir: string; version: string; files: CorpusFile[] };
      expect(corpus.files.length).toBeGreaterThan(0);
      const refusedByUs: string[] = [];
      const compared: string[] = [];
      for (const f of corpus.files) {
        if (f.error) {
          console.warn(`nibabel ${corpus.version} refuses ${f.file} (${f.error}): skipped`);
          continue;
        }
        let vol: Awaited<ReturnType<typeof readNifti>>;
        try {
          vol = await readNifti(f.read);
        } catch (e) {
          if (!(e instanceof RegkitIOError)) throw e;
          refusedByUs.push(`${f.file}: ${e.message}`);
          continue;
        }
        try {
          expect(vol.data.shape, `${f.file}: shape`).toEqual(f.shape);
          if (f.affine) expectClose(vol.affine, f.affine, 1e-6, 1e-5, `${f.file}: affine`);
          const want = decode(f.data!);
          const got = await vol.data.data();
          // float32 against float64: rounding only (relative 2⁻²⁴), NaN where nibabel has NaN
          expectClose(got, want, 1e-6, 1e-6, `${f.file}: data`);
        } finally {
          vol.data.dispose();
        }
        compared.push(
          `${f.file} (${f.cls}${f.generatedImage ? ', header only in the corpus: generated .img' : ''}${f.note ? `, ${f.note}` : ''})`,
        );
      }
      console.log(`nibabel ${corpus.version} corpus (${corpus.dir}): ${compared.join('; ')}`);
      expect(refusedByUs, 'files nibabel reads but readNifti refuses').toEqual([]);
      expect(compared.length).toBeGreaterThan(5);
    },
  );
});
