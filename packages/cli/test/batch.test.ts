// `regkit batch`: manifest and shard errors, a row equal to `regkit register`, one network
// load per shard, a bad row recorded while the others finish, two shards equal to one run,
// kill -9 then resume, and 200 small pairs in one shard with flat tensors and bounded RSS.
import { spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { gunzipSync } from 'node:zlib';
import {
  type BatchRowResult,
  mergeBatch,
  parseManifest,
  resolveShard,
  runBatch,
  runCli,
  setupBackend,
} from '@regkit/cli';
import { tf } from '@regkit/core';
import { readNifti, writeNifti } from '@regkit/io';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const here = fileURLToPath(new URL('.', import.meta.url));
const bin = resolve(here, '..', 'dist', 'bin.js');
const N = 32;
const identity = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];
/** Fast instance optimisation of 32×32 pairs: one level, no affine stage. */
const FAST = ['--transform', 'velocity', '--levels', '1', '--iterations', '8'];
const FAST_OPTIONS = { transform: 'velocity', levels: 1, iterations: [8] };

let dir: string;
let data: string;

/** A 32×32 ellipse (centre shifted by s) with an off-centre bump and stripes, and its 2 labels. */
function pair(sx: number, sy: number): { image: Float32Array; labels: Float32Array } {
  const image = new Float32Array(N * N);
  const labels = new Float32Array(N * N);
  for (let i = 0; i < N; i++) {
    for (let j = 0; j < N; j++) {
      const dx = (i - 15.5 - sx) / 9;
      const dy = (j - 15.5 - sy) / 7;
      const r = dx * dx + dy * dy;
      image[i * N + j] =
        (r < 1 ? 100 : 0) + 50 * Math.exp(-4 * ((dx - 0.3) ** 2 + dy * dy)) + 5 * Math.sin(i / 2);
      labels[i * N + j] = r < 0.3 ? 2 : r < 1 ? 1 : 0;
    }
  }
  return { image, labels };
}

async function write(path: string, values: Float32Array, labels = false): Promise<void> {
  const t = tf.tensor(values, [1, N, N, 1]);
  await writeNifti(path, { data: t, affine: identity }, labels ? { datatype: 'uint8' } : {});
  t.dispose();
}

/** A manifest of `n` rows over the fixed image and four moving images (with labels). */
function manifest(name: string, n: number, extra: (r: number) => string | null = () => null) {
  const lines = ['id,fixed,moving,fixed_labels,moving_labels'];
  for (let r = 0; r < n; r++) {
    lines.push(
      extra(r) ?? `p${r},fixed.nii.gz,m${r % 4}.nii.gz,fixed_labels.nii.gz,m${r % 4}_labels.nii.gz`,
    );
  }
  const path = join(data, name);
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function regkit(
  args: string[],
  cwd = dir,
  env: Record<string, string> = {},
): { done: Promise<Run>; pid: number; kill: () => void } {
  const child = spawn(process.execPath, [bin, ...args, '--backend', 'wasm'], {
    cwd,
    env: { ...process.env, FORCE_COLOR: '0', ...env },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  return {
    pid: child.pid!,
    kill: () => child.kill('SIGKILL'),
    done: new Promise((ok) =>
      child.on('close', (code) => ok({ code: code ?? 137, stdout, stderr })),
    ),
  };
}

function result(out: string, id: string): BatchRowResult {
  return JSON.parse(readFileSync(join(out, id, 'result.json'), 'utf8'));
}

/** Every file under `root` (relative paths). */
function filesUnder(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name), join(rel, e.name));
      else out.push(join(rel, e.name));
    }
  };
  walk(root, '');
  return out.sort();
}

/** A result without what differs between runs of the same row (times, paths of the outputs). */
function stable(r: BatchRowResult): Partial<BatchRowResult> {
  const { seconds: _s, registerSeconds: _r, finished: _f, ...rest } = r;
  return rest;
}

beforeAll(async () => {
  await setupBackend('wasm');
  dir = mkdtempSync(join(tmpdir(), 'regkit-batch-'));
  data = join(dir, 'data');
  mkdirSync(data);
  const f = pair(0, 0);
  await write(join(data, 'fixed.nii.gz'), f.image);
  await write(join(data, 'fixed_labels.nii.gz'), f.labels, true);
  for (let k = 0; k < 4; k++) {
    const m = pair(2 * Math.cos(k), 2 * Math.sin(k) + 1);
    await write(join(data, `m${k}.nii.gz`), m.image);
    await write(join(data, `m${k}_labels.nii.gz`), m.labels, true);
  }
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('manifest and shard errors', () => {
  const parse = (text: string) => parseManifest(text, 'pairs.csv', '/data');
  it('resolves paths against the manifest folder and reads quoted fields', () => {
    const rows = parse(
      'id,fixed,moving,similarity\n\na,f.nii.gz,/abs/m.nii.gz,mi\n"b",sub/f.nii.gz,"m,1.nii.gz",\n',
    );
    expect(rows).toEqual([
      {
        row: 0,
        line: 3,
        id: 'a',
        fixed: '/data/f.nii.gz',
        moving: '/abs/m.nii.gz',
        similarity: 'mi',
      },
      { row: 1, line: 4, id: 'b', fixed: '/data/sub/f.nii.gz', moving: '/data/m,1.nii.gz' },
    ]);
  });

  it('names the file, the line and the column', () => {
    const cases: Array<[string, RegExp]> = [
      ['id,fixed\na,f', /pairs\.csv line 1: missing column 'moving'/],
      ['id,fixed,moving,extra\n', /pairs\.csv line 1: unknown column 'extra' \(column 4\)/],
      ['id,fixed,moving\na,f,m\nb,f', /pairs\.csv line 3: 2 fields, but the header has 3/],
      ['id,fixed,moving\na,f,m\nb,,m', /pairs\.csv line 3: column 'fixed' is empty/],
      ['id,fixed,moving\na,f,m\nb,f,m\na,f,m', /pairs\.csv line 4: column 'id' 'a' repeats line 2/],
      ['id,fixed,moving\nSub1,f,m\nsub1,f,m', /line 3: column 'id' 'sub1' repeats line 2's 'Sub1'/],
      ['id,fixed,moving\n../x,f,m', /line 2: column 'id' '\.\.\/x' cannot name a folder/],
      ['id,fixed,moving\na/b,f,m', /line 2: column 'id' 'a\/b' cannot name a folder/],
      ['id,fixed,moving\n.hidden,f,m', /line 2: column 'id' '\.hidden' cannot name a folder/],
      ['id,fixed,moving\nresults.csv,f,m', /line 2: column 'id' 'results\.csv' cannot name/],
      [
        'id,fixed,moving,fixed_labels\na,f,m,l',
        /line 2: column 'fixed_labels' needs 'moving_labels'/,
      ],
      ['id,fixed,moving,method\na,f,m,deepreg', /line 2: column 'method' 'deepreg' is not/],
      [
        'id,fixed,moving,method,similarity\na,f,m,sitreg,mi',
        /line 2: column 'similarity' applies to instance/,
      ],
      ['id,fixed,moving,similarity\na,f,m,ssd', /line 2: column 'similarity' must be lncc/],
      ['id,fixed,moving,weights\na,f,m,w', /line 2: column 'weights' needs a network/],
      ['id,fixed,moving\na,"f,m', /pairs\.csv line 2: a quoted field is not closed/],
      ['', /manifest pairs\.csv is empty/],
    ];
    for (const [text, message] of cases) expect(() => parse(text), text).toThrow(message);
  });

  it('takes the shard from --shard or the schedulers’ variables', () => {
    expect(resolveShard('2/4', undefined, {})).toMatchObject({ index: 2, count: 4 });
    expect(resolveShard(undefined, undefined, {})).toMatchObject({ index: 0, count: 1 });
    // Slurm: --array=1-4 counts from SLURM_ARRAY_TASK_MIN
    expect(
      resolveShard(undefined, undefined, {
        SLURM_ARRAY_TASK_ID: '3',
        SLURM_ARRAY_TASK_MIN: '1',
        SLURM_ARRAY_TASK_COUNT: '4',
      }),
    ).toEqual({ index: 2, count: 4, source: 'SLURM_ARRAY_TASK_ID' });
    expect(resolveShard(undefined, 3, { JOB_COMPLETION_INDEX: '2' })).toMatchObject({
      index: 2,
      count: 3,
      source: 'JOB_COMPLETION_INDEX',
    });
    expect(resolveShard(undefined, 5, { AWS_BATCH_JOB_ARRAY_INDEX: '4' })).toMatchObject({
      index: 4,
      count: 5,
    });
    // --shard wins over the environment
    expect(resolveShard('0/2', undefined, { JOB_COMPLETION_INDEX: '1' }).index).toBe(0);
    for (const bad of ['4/4', '1/0', '-1/2', 'a/2', '3', '1/2/3']) {
      expect(() => resolveShard(bad, undefined, {}), bad).toThrow(/--shard must be I\/N/);
    }
    expect(() => resolveShard(undefined, 4, {})).toThrow(
      /--shards 4 needs this process's shard index/,
    );
    expect(() => resolveShard(undefined, undefined, { JOB_COMPLETION_INDEX: '1' })).toThrow(
      /JOB_COMPLETION_INDEX=1 gives the shard index but nothing gives the number of shards/,
    );
    expect(() => resolveShard(undefined, 2, { JOB_COMPLETION_INDEX: '2' })).toThrow(
      /\(2\) must be below the number of shards \(2\)/,
    );
    expect(() =>
      resolveShard(undefined, 3, { SLURM_ARRAY_TASK_ID: '0', SLURM_ARRAY_TASK_COUNT: '4' }),
    ).toThrow(/--shards 3 disagrees with SLURM_ARRAY_TASK_COUNT=4/);
    expect(() => resolveShard(undefined, 2, { JOB_COMPLETION_INDEX: 'x' })).toThrow(
      /JOB_COMPLETION_INDEX must be a whole number/,
    );
  });

  it('refuses a bad manifest before any row runs (exit 2)', async () => {
    const bad = join(data, 'dup.csv');
    writeFileSync(bad, 'id,fixed,moving\na,fixed.nii.gz,m0.nii.gz\na,fixed.nii.gz,m1.nii.gz\n');
    const out = join(dir, 'out-dup');
    const r = await regkit(['batch', '--manifest', bad, '--out-dir', out]).done;
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`manifest ${bad} line 3: column 'id' 'a' repeats line 2`);
    expect(existsSync(join(out, 'a'))).toBe(false);
  });
});

describe('regkit batch', () => {
  it('gives a row the outputs of `regkit register` with the same options', async () => {
    const m = manifest('one.csv', 1);
    const out = join(dir, 'out-one');
    const s = await runBatch({ manifest: m, outDir: out, ...FAST_OPTIONS });
    expect(s).toMatchObject({ rows: 1, done: 1, failed: 0, networkLoads: 0 });
    const ref = join(dir, 'ref-one');
    mkdirSync(ref);
    const io = { out: () => {}, err: () => {} };
    const code = await runCli(
      [
        'node',
        'regkit',
        'register',
        '--fixed',
        join(data, 'fixed.nii.gz'),
        '--moving',
        join(data, 'm0.nii.gz'),
        '--out',
        join(ref, 'w.nii.gz'),
        '--field',
        join(ref, 'u.nii.gz'),
        '--moving-labels',
        join(data, 'm0_labels.nii.gz'),
        '--out-labels',
        join(ref, 'l.nii.gz'),
        '--backend',
        'wasm',
        '--quiet',
        ...FAST,
      ],
      io,
    );
    expect(code).toBe(0);
    for (const [a, b] of [
      ['warped.nii.gz', 'w.nii.gz'],
      ['field.nii.gz', 'u.nii.gz'],
      ['labels.nii.gz', 'l.nii.gz'],
    ] as const) {
      const batchBytes = gunzipSync(readFileSync(join(out, 'p0', a)));
      expect(batchBytes.equals(gunzipSync(readFileSync(join(ref, b)))), a).toBe(true);
    }
    const r = result(out, 'p0');
    expect(r.status).toBe('done');
    expect(r.options).toEqual({ method: 'instance', similarity: 'lncc', ...FAST_OPTIONS });
    expect(Object.keys(r.inputs).sort()).toEqual([
      'fixed',
      'fixed_labels',
      'moving',
      'moving_labels',
    ]);
    expect(r.inputs.fixed!.sha256).toMatch(/^[0-9a-f]{64}$/);
    // Dice before and after, as `regkit eval` computes them on the written files
    const evalOf = async (warped: string) => {
      let text = '';
      const c = await runCli(
        [
          'node',
          'regkit',
          'eval',
          '--fixed-labels',
          join(data, 'fixed_labels.nii.gz'),
          '--warped-labels',
          warped,
          '--json',
        ],
        { out: (t) => (text += t), err: () => {} },
      );
      expect(c).toBe(0);
      return JSON.parse(text) as { dice: number[]; labels: number[] };
    };
    const before = await evalOf(join(data, 'm0_labels.nii.gz'));
    const after = await evalOf(join(ref, 'l.nii.gz'));
    expect(r.overlap!.labels).toEqual(before.labels);
    expect(r.overlap!.diceBefore).toEqual(before.dice);
    expect(r.overlap!.diceAfter).toEqual(after.dice);
    expect(r.overlap!.meanDiceAfter).toBeGreaterThan(r.overlap!.meanDiceBefore + 0.1);
    expect(r.foldingPercent).toBe(0);
  });

  it('loads a network once per shard; its rows equal `regkit register --method`', async () => {
    const m = join(data, 'net.csv');
    writeFileSync(
      m,
      'id,fixed,moving,method\nn0,fixed.nii.gz,m0.nii.gz,sitreg\nn1,fixed.nii.gz,m1.nii.gz,sitreg\nn2,fixed.nii.gz,m2.nii.gz,sitreg\n',
    );
    const out = join(dir, 'out-net');
    const s = await runBatch({ manifest: m, outDir: out });
    expect(s).toMatchObject({ rows: 3, done: 3, failed: 0, networkLoads: 1 });
    expect(result(out, 'n1').inputs.weights!.sha256).toMatch(/^[0-9a-f]{64}$/);
    const ref = join(dir, 'ref-net');
    mkdirSync(ref);
    const code = await runCli(
      [
        'node',
        'regkit',
        'register',
        '--fixed',
        join(data, 'fixed.nii.gz'),
        '--moving',
        join(data, 'm1.nii.gz'),
        '--out',
        join(ref, 'w.nii.gz'),
        '--field',
        join(ref, 'u.nii.gz'),
        '--method',
        'sitreg',
        '--backend',
        'wasm',
        '--quiet',
      ],
      { out: () => {}, err: () => {} },
    );
    expect(code).toBe(0);
    expect(
      gunzipSync(readFileSync(join(out, 'n1', 'field.nii.gz'))).equals(
        gunzipSync(readFileSync(join(ref, 'u.nii.gz'))),
      ),
    ).toBe(true);
  });

  it('records a bad row, finishes the others and exits 1; a rerun redoes only that row', async () => {
    const broken = join(data, 'broken.nii.gz');
    writeFileSync(broken, readFileSync(join(data, 'm1.nii.gz')).subarray(0, 100));
    const m = manifest('bad.csv', 3, (r) =>
      r === 1 ? 'p1,fixed.nii.gz,broken.nii.gz,fixed_labels.nii.gz,m1_labels.nii.gz' : null,
    );
    const out = join(dir, 'out-bad');
    const args = ['batch', '--manifest', m, '--out-dir', out, ...FAST];
    const r = await regkit(args).done;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/p1 FAILED \(line 3\): .*broken\.nii\.gz/);
    expect(r.stderr).toContain(
      `1 of 3 rows failed (listed in ${join(out, 'failures-0-of-1.jsonl')}`,
    );
    expect(r.stderr).toMatch(/1\/3 p0 done .* Dice/);
    expect(result(out, 'p0').status).toBe('done');
    expect(result(out, 'p2').status).toBe('done');
    const failed = result(out, 'p1');
    expect(failed.status).toBe('failed');
    expect(failed.error).toContain('broken.nii.gz');
    expect(readdirSync(join(out, 'p1'))).toEqual(['result.json']);
    const lines = readFileSync(join(out, 'failures-0-of-1.jsonl'), 'utf8').trim().split('\n');
    expect(lines.map((l) => JSON.parse(l))).toEqual([{ id: 'p1', line: 3, error: failed.error }]);
    // merge lists it; exit 1 because a row failed
    const merged = await regkit(['batch', 'merge', out, '--json']).done;
    expect(merged.code).toBe(1);
    expect(JSON.parse(merged.stdout)).toMatchObject({ rows: 3, done: 2, failed: 1 });
    const csv = readFileSync(join(out, 'results.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe(
      'id,row,status,method,similarity,fixed,moving,fixed_labels,moving_labels,dice_before,dice_after,hd95_before_mm,hd95_after_mm,folding_percent,seconds,error',
    );
    expect(csv.slice(1).map((l) => l.split(',').slice(0, 3).join(','))).toEqual([
      'p0,0,done',
      'p1,1,failed',
      'p2,2,done',
    ]);
    // the file repaired: p1 runs again (and p2, whose warped image was deleted), the
    // failures file goes
    writeFileSync(broken, readFileSync(join(data, 'm1.nii.gz')));
    rmSync(join(out, 'p2', 'warped.nii.gz'));
    const again = await regkit([...args, '--json']).done;
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ done: 2, skipped: 1, failed: 0 });
    expect(existsSync(join(out, 'p2', 'warped.nii.gz'))).toBe(true);
    expect(result(out, 'p1').status).toBe('done');
    expect(existsSync(join(out, 'failures-0-of-1.jsonl'))).toBe(false);
    // new options redo every row
    const changed = await regkit([...args.slice(0, -1), '9', '--json']).done;
    expect(JSON.parse(changed.stdout)).toMatchObject({ done: 3, skipped: 0 });
  });

  it('two shards give the union of one unsharded run', async () => {
    const m = manifest('six.csv', 6);
    const sharded = join(dir, 'out-sharded');
    const whole = join(dir, 'out-whole');
    const a = await runBatch({ manifest: m, outDir: sharded, shard: '0/2', ...FAST_OPTIONS });
    const b = await runBatch({
      manifest: m,
      outDir: sharded,
      shards: 2,
      env: { JOB_COMPLETION_INDEX: '1' },
      ...FAST_OPTIONS,
    });
    expect([a.rows, b.rows, a.done + b.done]).toEqual([3, 3, 6]);
    const all = await runBatch({ manifest: m, outDir: whole, ...FAST_OPTIONS });
    expect(all).toMatchObject({ rows: 6, done: 6 });
    expect(filesUnder(sharded)).toEqual(filesUnder(whole));
    for (let r = 0; r < 6; r++) {
      const id = `p${r}`;
      expect(stable(result(sharded, id))).toEqual(stable(result(whole, id)));
      for (const f of ['warped.nii.gz', 'field.nii.gz', 'labels.nii.gz']) {
        const x = gunzipSync(readFileSync(join(sharded, id, f)));
        expect(x.equals(gunzipSync(readFileSync(join(whole, id, f)))), `${id}/${f}`).toBe(true);
      }
    }
    const csv = async (d: string) => {
      await mergeBatch(d);
      // without the seconds column
      return readFileSync(join(d, 'results.csv'), 'utf8')
        .split('\n')
        .map((l) => l.split(',').slice(0, -2).join(','));
    };
    expect(await csv(sharded)).toEqual(await csv(whole));
  });

  it('resumes after kill -9: every row done, no partial file under a final name', async () => {
    const n = 30;
    const m = manifest('kill.csv', n);
    const out = join(dir, 'out-kill');
    const args = ['batch', '--manifest', m, '--out-dir', out, ...FAST];
    const first = regkit(args);
    // kill once a few rows are done, at whatever moment that is
    const deadline = Date.now() + 120_000;
    for (;;) {
      const done = existsSync(out)
        ? readdirSync(out).filter((d) => existsSync(join(out, d, 'result.json'))).length
        : 0;
      if (done >= 4 || Date.now() > deadline) break;
      await new Promise((ok) => setTimeout(ok, 20));
    }
    first.kill();
    const killed = await first.done;
    expect(killed.code).not.toBe(0);
    const finishedBefore = new Map<string, string>();
    for (const d of readdirSync(out)) {
      if (existsSync(join(out, d, 'result.json'))) finishedBefore.set(d, result(out, d).finished);
    }
    expect(finishedBefore.size).toBeGreaterThanOrEqual(4);
    expect(finishedBefore.size).toBeLessThan(n);
    // a temporary left by a dead writer beside a finished row goes too
    writeFileSync(join(out, 'p0', `.result.json.${first.pid}.zz.tmp`), '{');
    // and beside an unfinished row, with a half-written output the killed writer left there
    const unfinished = `p${n - 1}`;
    mkdirSync(join(out, unfinished), { recursive: true });
    writeFileSync(join(out, unfinished, `.warped.nii.gz.${first.pid}.zz.tmp`), 'half');
    const second = await regkit([...args, '--json']).done;
    expect(second.code).toBe(0);
    const s = JSON.parse(second.stdout);
    expect(s.skipped).toBe(finishedBefore.size);
    expect(s.done).toBe(n - finishedBefore.size);
    for (const [d, finished] of finishedBefore) expect(result(out, d).finished, d).toBe(finished);
    const files = filesUnder(out);
    expect(files.filter((f) => f.endsWith('.tmp'))).toEqual([]);
    for (let r = 0; r < n; r++) {
      const id = `p${r}`;
      expect(result(out, id).status).toBe('done');
      for (const f of ['warped.nii.gz', 'field.nii.gz', 'labels.nii.gz']) {
        expect(files).toContain(join(id, f));
      }
    }
    // every NIfTI under a final name reads back whole
    for (const f of files.filter(
      (x) => x.endsWith('warped.nii.gz') || x.endsWith('labels.nii.gz'),
    )) {
      const v = await readNifti(join(out, f));
      expect(v.data.shape, f).toEqual([1, N, N, 1]);
      v.data.dispose();
    }
  });

  it('runs the one command of the Slurm, Kubernetes and Nextflow templates, a shard per scheduler', async () => {
    const cohorts = resolve(here, '..', '..', '..', 'docs', 'cohorts');
    const commands = ['slurm.sh', 'kubernetes-job.yaml', 'main.nf'].map((f) => {
      const lines = readFileSync(join(cohorts, f), 'utf8')
        .split('\n')
        .map((l) => l.replace(/^\s*(- )?/, ''))
        .filter((l) => l.startsWith('regkit batch --manifest'));
      expect(lines, f).toHaveLength(1);
      return lines[0]!;
    });
    expect(new Set(commands).size).toBe(1);
    const command = commands[0]!.split(' ').slice(1);
    expect(command).toEqual([
      'batch',
      '--manifest',
      'pairs.csv',
      '--out-dir',
      'results',
      '--shards',
      '4',
    ]);
    // a study folder as the templates expect: pairs.csv beside the images, results/ beside it
    const study = join(dir, 'study');
    mkdirSync(study);
    for (const f of readdirSync(data)) writeFileSync(join(study, f), readFileSync(join(data, f)));
    const lines = ['id,fixed,moving,fixed_labels,moving_labels'];
    for (let r = 0; r < 4; r++)
      lines.push(`s${r},fixed.nii.gz,m${r}.nii.gz,fixed_labels.nii.gz,m${r}_labels.nii.gz`);
    writeFileSync(join(study, 'pairs.csv'), `${lines.join('\n')}\n`);
    // the variables each scheduler sets for its task k
    const environments: Array<Record<string, string>> = [
      { SLURM_ARRAY_TASK_ID: '0', SLURM_ARRAY_TASK_MIN: '0', SLURM_ARRAY_TASK_COUNT: '4' },
      { JOB_COMPLETION_INDEX: '1' },
      { REGKIT_SHARD_INDEX: '2' },
      { AWS_BATCH_JOB_ARRAY_INDEX: '3' },
    ];
    const runs = await Promise.all(
      environments.map((env) => regkit([...command, '--json'], study, env).done),
    );
    for (const [k, r] of runs.entries()) {
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({
        shard: { index: k, count: 4 },
        rows: 1,
        done: 1,
      });
    }
    const merged = await regkit(
      ['batch', 'merge', 'results', '--manifest', 'pairs.csv', '--json'],
      study,
    ).done;
    expect(merged.code, merged.stderr).toBe(0);
    expect(JSON.parse(merged.stdout)).toMatchObject({ rows: 4, done: 4, failed: 0, missing: 0 });
    for (let r = 0; r < 4; r++) {
      expect(result(join(study, 'results'), `s${r}`).overlap!.meanDiceAfter).toBeGreaterThan(0.8);
    }
  });

  it('keeps tensors flat and RSS bounded over 200 pairs in one shard', async () => {
    const n = 200;
    const m = manifest('load.csv', n);
    const out = join(dir, 'out-load');
    const tensors: number[] = [];
    // memory after a full garbage collection every 25 rows (without one, V8 grows its heap
    // lazily and RSS measures the collector's schedule, not what the batch keeps)
    v8.setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const samples: Array<{ row: number; rssMb: number; heapMb: number }> = [];
    const before = tf.memory().numTensors;
    const s = await runBatch({
      manifest: m,
      outDir: out,
      ...FAST_OPTIONS,
      onRow: (r) => {
        tensors.push(tf.memory().numTensors);
        if ((r.row + 1) % 25 === 0) {
          gc();
          const u = process.memoryUsage();
          samples.push({ row: r.row + 1, rssMb: u.rss / 2 ** 20, heapMb: u.heapUsed / 2 ** 20 });
        }
      },
    });
    expect(s).toMatchObject({ rows: n, done: n, failed: 0 });
    expect(new Set(tensors)).toEqual(new Set([before]));
    console.info(
      `batch load: ${n} rows in ${s.seconds.toFixed(1)} s; after rows ${samples.map((x) => x.row).join(', ')}: RSS ${samples.map((x) => x.rssMb.toFixed(0)).join(', ')} MB, JS heap ${samples.map((x) => x.heapMb.toFixed(1)).join(', ')} MB`,
    );
    const at50 = samples.find((x) => x.row === 50)!;
    const at200 = samples.find((x) => x.row === 200)!;
    expect(at200.heapMb - at50.heapMb).toBeLessThan(HEAP_GROWTH_MB);
    expect(at200.rssMb - at50.rssMb).toBeLessThan(RSS_GROWTH_MB);
  });
});

/** Allowed growth from row 50 to row 200 of the load test, after a full GC (MB). */
const RSS_GROWTH_MB = 24;
const HEAP_GROWTH_MB = 3;
