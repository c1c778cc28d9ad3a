// Write + read times of one image in every format @regkit/io writes, as JSON lines.
// Usage (after `pnpm --filter @regkit/io build`):
//   node packages/io/bench/formats.mjs [image.nii.gz]   (default: Colin27 from shared/data)
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend } from '@regkit/core';
import { readNifti, readVolume, writeVolume } from '../dist/index.js';

const src =
  process.argv[2] ??
  fileURLToPath(
    new URL('../../../../shared/data/bundleable/colin27_ch2_t1.nii.gz', import.meta.url),
  );
await initBackend('cpu');
const v = await readNifti(src);
const datatype = v.header.datatype === 'float64' ? 'float32' : v.header.datatype;
const dir = mkdtempSync(join(tmpdir(), 'regkit-io-bench-'));
try {
  for (const [name, opts] of [
    ['a.nii.gz', {}],
    ['a.mha', {}],
    ['a_zlib.mha', { compress: true }],
    ['a.nrrd', {}],
    ['a_gzip.nrrd', { compress: true }],
    ['a.mgh', {}],
    ['a.mgz', {}],
  ]) {
    const path = join(dir, name);
    const t0 = performance.now();
    await writeVolume(path, v, { datatype, ...opts });
    const writeMs = performance.now() - t0;
    const times = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      const r = await readVolume(path);
      times.push(performance.now() - t);
      r.data.dispose();
    }
    times.sort((a, b) => a - b);
    console.log(
      JSON.stringify({
        bench: 'io.formats',
        file: name,
        shape: v.data.shape.slice(1, -1),
        datatype,
        bytes: statSync(path).size,
        writeMs: +writeMs.toFixed(1),
        readMsMedian: +times[2].toFixed(1),
      }),
    );
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
  v.data.dispose();
}
