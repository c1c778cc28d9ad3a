// Hardening of the command line found by an outside probe: outputs claimed at write time and
// written together, every check before computing, stale temporaries, labels kept exactly,
// eval linear in the labels, degenerate registrations refused or warned about.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, tf } from '@regkit/core';
import { readDisplacementField, readNifti, writeNifti } from '@regkit/io';
import { dice, hausdorff95 } from '@regkit/metrics';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const here = fileURLToPath(new URL('.', import.meta.url));
const bin = resolve(here, '..', 'dist', 'bin.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the built `regkit` in a child process. */
function regkit(args: string[], cwd: string): Promise<Run> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [bin, ...args, '--backend', 'cpu'], {
      cwd,
      env: { ...process.env, FORCE_COLOR: '0' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    child.on('close', (code) => done({ code: code ?? 1, stdout, stderr }));
  });
}

/** stderr without tfjs's banner about tfjs-node. */
function errors(r: Run): string {
  return r.stderr
    .split('\n')
    .filter((l) => l.startsWith('regkit'))
    .join('\n');
}

const affine = [2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1];

/** A Gaussian blob of amplitude `scale` at `centre` on a grid of `shape`. */
function blob(shape: number[], centre: number[], sigma: number, scale = 100): tf.Tensor {
  const [a, b, c] = shape as [number, number, number];
  const v = new Float32Array(a * b * c);
  for (let i = 0; i < a; i++)
    for (let j = 0; j < b; j++)
      for (let k = 0; k < c; k++) {
        const q = (i - centre[0]!) ** 2 + (j - centre[1]!) ** 2 + (k - centre[2]!) ** 2;
        v[(i * b + j) * c + k] = scale * Math.exp(-q / (2 * sigma * sigma));
      }
  return tf.tensor(v, [1, a, b, c, 1]);
}

async function save(path: string, data: tf.Tensor, opts: Parameters<typeof writeNifti>[2] = {}) {
  await writeNifti(path, { data, affine }, opts);
  data.dispose();
  return path;
}

let dir: string;
beforeAll(async () => {
  await initBackend('cpu');
  dir = mkdtempSync(join(tmpdir(), 'regkit-hardening-'));
  await save(join(dir, 'f.nii.gz'), blob([20, 20, 20], [10, 10, 10], 3.5));
  await save(join(dir, 'm.nii.gz'), blob([20, 20, 20], [11, 9, 10], 3.5));
  // the same moving image a thousand times brighter: tells whose output survived
  await save(join(dir, 'm_bright.nii.gz'), blob([20, 20, 20], [11, 9, 10], 3.5, 1e5));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('outputs are claimed when written', () => {
  it('two concurrent runs writing the same --out: exactly one succeeds, the survivor is complete and the winner’s', async () => {
    const work = join(dir, 'race');
    mkdirSync(work);
    const run = (moving: string, field: string) =>
      regkit(
        [
          'register',
          '--fixed',
          join(dir, 'f.nii.gz'),
          '--moving',
          join(dir, moving),
          '--out',
          'same.nii.gz',
          '--field',
          field,
          '--json',
        ],
        work,
      );
    const [a, b] = await Promise.all([
      run('m.nii.gz', 'field_a.nii.gz'),
      run('m_bright.nii.gz', 'field_b.nii.gz'),
    ]);
    const codes = [a.code, b.code].sort();
    expect(codes[0], `${a.stderr}\n${b.stderr}`).toBe(0);
    expect(codes[1]).not.toBe(0);
    const [winner, loser, winnerField, loserField, scale] =
      a.code === 0
        ? [a, b, 'field_a.nii.gz', 'field_b.nii.gz', 100]
        : [b, a, 'field_b.nii.gz', 'field_a.nii.gz', 1e5];
    expect(JSON.parse(winner.stdout).outputs.out).toBe('same.nii.gz');
    const message = errors(loser);
    expect(message.split('\n')).toHaveLength(1);
    expect(message).toContain('same.nii.gz');
    expect(message).toMatch(/another process|exists/);
    expect(message).toContain('--force');
    // all or nothing: the loser left no field and no temporaries
    expect(existsSync(join(work, winnerField))).toBe(true);
    expect(existsSync(join(work, loserField))).toBe(false);
    expect(readdirSync(work).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    const out = await readNifti(join(work, 'same.nii.gz'));
    expect(out.data.shape).toEqual([1, 20, 20, 20, 1]);
    const max = (await tf.max(out.data).data())[0]!;
    out.data.dispose();
    expect(max).toBeGreaterThan(0.5 * scale);
    expect(max).toBeLessThan(1.01 * scale);
  });

  it('removes stale temporaries of dead processes next to the outputs, keeps those of live ones', async () => {
    const work = join(dir, 'stale');
    mkdirSync(work);
    const dead = spawnSync(process.execPath, ['-e', 'process.pid']).pid!;
    const staleName = `.o.nii.gz.${dead}.k3j2h1g0.tmp`;
    const liveName = `.o.nii.gz.${process.pid}.a1b2c3d4.tmp`;
    writeFileSync(join(work, staleName), 'half a file');
    writeFileSync(join(work, liveName), 'still being written');
    const r = await regkit(
      ['deform', '--image', join(dir, 'f.nii.gz'), '--out', 'o.nii.gz', '--true-field', 'v.nii'],
      work,
    );
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(join(work, staleName))).toBe(false);
    expect(existsSync(join(work, liveName))).toBe(true);
    expect(readdirSync(work).sort()).toEqual([liveName, 'o.nii.gz', 'v.nii'].sort());
  });
});

describe('every check that needs no registration comes first', () => {
  it('a missing output folder or an unknown extension is a usage error before registering, and nothing is written', async () => {
    const work = join(dir, 'preflight');
    mkdirSync(work);
    const base = ['register', '--fixed', join(dir, 'f.nii.gz'), '--moving', join(dir, 'm.nii.gz')];
    const noDir = await regkit([...base, '--out', 'missing/w.nii.gz', '--json'], work);
    expect(noDir.code).toBe(2);
    expect(errors(noDir)).toContain('missing');
    expect(errors(noDir)).toContain('does not exist');
    const ext = await regkit([...base, '--out', 'w.nii.gz', '--field', 'u.txt'], work);
    expect(ext.code).toBe(2);
    expect(errors(ext)).toContain('--field u.txt');
    expect(errors(ext)).toContain('.nii.gz');
    const png = await regkit([...base, '--out', 'w.nii.gz', '--png', 'p.nii.gz'], work);
    expect(png.code).toBe(2);
    expect(errors(png)).toContain('.png');
    const notLabels = await save(
      join(work, 'noise.nii.gz'),
      tf.randomUniform([1, 20, 20, 20, 1], 0, 1, 'float32', 5),
    );
    const labels = await regkit(
      [...base, '--out', 'w.nii.gz', '--moving-labels', notLabels, '--out-labels', 'l.nii.gz'],
      work,
    );
    expect(labels.code).toBe(2);
    expect(errors(labels)).toContain('--moving-labels');
    expect(errors(labels)).toContain('is not a label map');
    expect(readdirSync(work)).toEqual(['noise.nii.gz']);
  });

  it('a 3D image one voxel thick is registered as 2D: the field has a zero component along that axis', async () => {
    const work = join(dir, 'thin');
    mkdirSync(work);
    const f = await save(join(work, 'f.nii.gz'), blob([24, 1, 24], [12, 0, 12], 5));
    const m = await save(join(work, 'm.nii.gz'), blob([24, 1, 24], [13, 0, 11], 5));
    const r = await regkit(
      ['register', '--fixed', f, '--moving', m, '--out', 'w.nii.gz', '--field', 'u.nii.gz'],
      work,
    );
    expect(r.code, r.stderr).toBe(0);
    const field = await readDisplacementField(join(work, 'u.nii.gz'), await readNifti(f));
    expect(field.shape).toEqual([1, 24, 1, 24, 3]);
    const v = (await field.data()) as Float32Array;
    field.dispose();
    let along = 0;
    let across = 0;
    for (let i = 0; i < v.length; i += 3) {
      along = Math.max(along, Math.abs(v[i + 1]!));
      across = Math.max(across, Math.abs(v[i]!), Math.abs(v[i + 2]!));
    }
    expect(along).toBe(0);
    expect(across).toBeGreaterThan(0.3);
    const e = await regkit(
      ['eval', '--fixed-labels', f, '--warped-labels', f, '--field', 'u.nii.gz', '--json'],
      work,
    );
    expect(e.code, e.stderr).toBe(0);
    expect(JSON.parse(e.stdout).foldingPercent).toBe(0);
    const line = await save(join(work, 'line.nii.gz'), blob([24, 1, 1], [12, 0, 0], 5));
    const l = await regkit(['register', '--fixed', line, '--moving', line, '--out', 'l.nii'], work);
    expect(l.code).toBe(2);
    expect(errors(l)).toContain('line.nii.gz');
    expect(existsSync(join(work, 'l.nii'))).toBe(false);
  });
});

describe('labels keep their values and datatype', () => {
  it('apply --nearest keeps non-integer labels (float32) and integer labels in their datatype; eval does not round them', async () => {
    const work = join(dir, 'labels');
    mkdirSync(work);
    const n = 8 * 8 * 8;
    const floatLabels = Float32Array.from({ length: n }, (_, i) => [0, 1.5, 2.7][(i >> 6) % 3]!);
    const fl = await save(join(work, 'fl.nii.gz'), tf.tensor(floatLabels, [1, 8, 8, 8, 1]));
    const intLabels = Float32Array.from({ length: n }, (_, i) => [0, 300, 1000][(i >> 6) % 3]!);
    const il = await save(join(work, 'il.nii.gz'), tf.tensor(intLabels, [1, 8, 8, 8, 1]), {
      datatype: 'uint16',
    });
    const u = join(work, 'zero.nii.gz');
    const { writeDisplacementField } = await import('@regkit/io');
    const ref = await readNifti(fl);
    const zero = tf.zeros([1, 8, 8, 8, 3]);
    await writeDisplacementField(u, zero, ref);
    zero.dispose();
    ref.data.dispose();
    for (const [input, out, datatype, values] of [
      [fl, 'fl_w.nii.gz', 'float32', floatLabels],
      [il, 'il_w.nii.gz', 'uint16', intLabels],
    ] as const) {
      const r = await regkit(
        ['apply', '--moving', input, '--field', u, '--out', out, '--nearest'],
        work,
      );
      expect(r.code, r.stderr).toBe(0);
      const w = await readNifti(join(work, out));
      expect(w.header.datatype).toBe(datatype);
      expect(Array.from((await w.data.data()) as Float32Array)).toEqual(Array.from(values));
      w.data.dispose();
    }
    const e = await regkit(
      ['eval', '--fixed-labels', fl, '--warped-labels', 'fl_w.nii.gz', '--json'],
      work,
    );
    expect(e.code, e.stderr).toBe(0);
    const s = JSON.parse(e.stdout);
    expect(s.labels).toEqual([1.5, 2.7]);
    expect(s.dice).toEqual([1, 1]);
    const chosen = await regkit(
      ['eval', '--fixed-labels', fl, '--warped-labels', fl, '--labels', '2.7', '--json'],
      work,
    );
    expect(JSON.parse(chosen.stdout).dice).toEqual([1]);
  });

  it('eval refuses images that are not label maps, naming the file and the rule', async () => {
    const work = join(dir, 'notlabels');
    mkdirSync(work);
    // an intensity image: a blob with noise (every voxel its own value)
    const noisy = tf.tidy(() =>
      tf.add(
        blob([20, 20, 20], [10, 10, 10], 4),
        tf.randomUniform([1, 20, 20, 20, 1], 0, 1, 'float32', 3),
      ),
    );
    const img = await save(join(work, 'img.nii.gz'), noisy);
    const lab = await save(join(work, 'lab.nii.gz'), tf.ones([1, 20, 20, 20, 1]));
    const r = await regkit(['eval', '--fixed-labels', lab, '--warped-labels', img], work);
    expect(r.code).toBe(2);
    expect(errors(r)).toContain('img.nii.gz is not a label map');
    expect(errors(r)).toContain('distinct values');
    const nan = Float32Array.from({ length: 8000 }, (_, i) => (i === 17 ? Number.NaN : 1));
    const bad = await save(join(work, 'nan.nii'), tf.tensor(nan, [1, 20, 20, 20, 1]));
    const n = await regkit(['eval', '--fixed-labels', bad, '--warped-labels', lab], work);
    // readNifti keeps NaN voxels (SPM writes them) with a warning; eval refuses them as labels
    expect(n.code).toBe(2);
    expect(errors(n)).toContain('is not a label map');
    expect(errors(n)).toContain('nan.nii');
    expect(errors(n)).toContain('NaN');
  });

  it('eval is linear in the labels: 10,000 labels of a 32³ volume in seconds (one pass per label took 377 s), equal to @regkit/metrics', async () => {
    const { evalCommand } = await import('@regkit/cli');
    const work = join(dir, 'many');
    mkdirSync(work);
    const n = 32 * 32 * 32;
    const a = Float32Array.from({ length: n }, (_, i) => (i % 10000) + 1);
    const b = Float32Array.from({ length: n }, (_, i) => ((i + (i % 7 === 0 ? 1 : 0)) % 10000) + 1);
    const pa = await save(join(work, 'a.nii'), tf.tensor(a, [1, 32, 32, 32, 1]));
    const pb = await save(join(work, 'b.nii'), tf.tensor(b, [1, 32, 32, 32, 1]));
    const t0 = performance.now();
    const s = await evalCommand({ fixedLabels: pa, warpedLabels: pb });
    const seconds = (performance.now() - t0) / 1000;
    expect(s.labels).toHaveLength(10000);
    // ~0.2 s on an idle 2-core machine; the bound only separates a few passes over the volume
    // from one pass per label (377 s), with room for a machine busy with other test files
    expect(seconds).toBeLessThan(30);
    // the same numbers as the per-label metrics, on a few labels
    const ta = tf.tensor(a, [1, 32, 32, 32, 1]);
    const tb = tf.tensor(b, [1, 32, 32, 32, 1]);
    const some = [1, 2, 7, 5000, 9999];
    const d = await dice(ta, tb, { labels: some });
    const h = await hausdorff95(ta, tb, { labels: some, spacing: [2, 2, 2] });
    tf.dispose([ta, tb]);
    for (const [k, l] of some.entries()) {
      expect(s.dice[l - 1]).toBeCloseTo(d[k]!, 12);
      expect(s.hd95[l - 1]).toBeCloseTo(h[k]!, 9);
    }
    // compact labels (the distance-transform path) agree too
    const blocks = Float32Array.from(
      { length: n },
      (_, i) => 1 + (((i >> 5) % 32) >> 3) * 4 + ((i >> 10) >> 3),
    );
    const shifted = Float32Array.from({ length: n }, (_, i) => blocks[Math.max(0, i - 33)]!);
    const pc = await save(join(work, 'c.nii'), tf.tensor(blocks, [1, 32, 32, 32, 1]));
    const pd = await save(join(work, 'd.nii'), tf.tensor(shifted, [1, 32, 32, 32, 1]));
    const c = await evalCommand({ fixedLabels: pc, warpedLabels: pd });
    const tc = tf.tensor(blocks, [1, 32, 32, 32, 1]);
    const td = tf.tensor(shifted, [1, 32, 32, 32, 1]);
    const hc = await hausdorff95(tc, td, { labels: c.labels, spacing: [2, 2, 2] });
    const dc = await dice(tc, td, { labels: c.labels });
    tf.dispose([tc, td]);
    expect(c.labels.length).toBe(16);
    for (const [k] of c.labels.entries()) {
      expect(c.hd95[k]).toBeCloseTo(hc[k]!, 9);
      expect(c.dice[k]).toBeCloseTo(dc[k]!, 12);
    }
  });
});

describe('degenerate registrations are refused or warned about', () => {
  it('refuses a constant or all-zero image and images that do not overlap in space, naming the file', async () => {
    const work = join(dir, 'degenerate');
    mkdirSync(work);
    const f = join(dir, 'f.nii.gz');
    const zero = await save(join(work, 'zero.nii.gz'), tf.zeros([1, 20, 20, 20, 1]));
    const flat = await save(join(work, 'flat.nii.gz'), tf.fill([1, 20, 20, 20, 1], 7));
    const far = join(work, 'far.nii.gz');
    const b = blob([20, 20, 20], [10, 10, 10], 3.5);
    await writeNifti(far, { data: b, affine: [2, 0, 0, 500, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1] });
    b.dispose();
    for (const [fixed, moving, name, words] of [
      [f, zero, 'zero.nii.gz', 'constant'],
      [flat, f, 'flat.nii.gz', 'constant'],
      [f, far, 'far.nii.gz', 'do not overlap'],
    ] as const) {
      const r = await regkit(
        ['register', '--fixed', fixed, '--moving', moving, '--out', 'w.nii.gz'],
        work,
      );
      expect(r.code, name).toBe(2);
      expect(errors(r)).toContain(name);
      expect(errors(r)).toContain(words);
      expect(existsSync(join(work, 'w.nii.gz'))).toBe(false);
    }
  });

  it('warns on stderr when the foregrounds of the images do not overlap', async () => {
    const work = join(dir, 'apart');
    mkdirSync(work);
    const a = await save(join(work, 'a.nii.gz'), blob([20, 20, 20], [4, 4, 4], 1.5));
    const b = await save(join(work, 'b.nii.gz'), blob([20, 20, 20], [15, 15, 15], 1.5));
    const r = await regkit(
      ['register', '--fixed', a, '--moving', b, '--out', 'w.nii.gz', '--json'],
      work,
    );
    expect(r.code, r.stderr).toBe(0);
    expect(errors(r)).toContain('regkit: warning:');
    expect(errors(r)).toContain('do not overlap');
    expect(JSON.parse(r.stdout).warnings).toHaveLength(1);
  });
});
