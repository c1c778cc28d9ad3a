#!/usr/bin/env node
// `regkit register` against elastix 5 (B-spline, Mattes MI, 3 resolutions, 500 iterations:
// bench/elastix/bspline_mattes.txt) on two 3D problems with a known answer, run one after the
// other on this machine. Target: regkit's mean Dice >= elastix's, in at most half its wall time.
//
//   node packages/cli/bench/elastix_vs_regkit.mjs [options]
//     --cases a,b          cases to run (default: colin27-aal,brats-t1-flair)
//     --full               Colin27 at 1 mm (181x217x181) instead of the demo's 2 mm (91x109x91)
//     --threads N          elastix/transformix -threads (default: os.availableParallelism())
//     --extra CASE=ARGS    extra `regkit register` arguments for CASE or CASE/SIMILARITY
//                          (replace the table's)
//     --skip-elastix       time regkit only (for tuning; nothing is saved)
//     --no-save            do not append to bench/results/elastix.jsonl
//     --keep               keep the work folder (default: a temporary folder, removed at the end)
//     --work DIR           work folder to use (kept)
//
// Per case:
//   (a) `regkit deform` makes the fixed image (and fixed labels) by warping an image with a
//       seeded random smooth B-spline field; the moving image and labels are the originals;
//   (b) elastix (fixed, moving) then transformix on the moving labels with nearest neighbour,
//       both timed (wall clock of the two processes); `regkit eval` scores the labels;
//   (c) `regkit register ... --moving-labels --out-labels --json`, timed; `regkit eval`;
//   (d) one JSON line per tool on stdout, appended to bench/results/elastix.jsonl (schema of
//       scripts/benchmarks-md.mjs: suite/impl/backend/threads/op/size/ms/runs/peak_rss_mb +
//       extras; `command` holds the exact command line, with $WORK for the work folder).
//
// Cases (paths of the BraTS case are never copied into the repository):
//   colin27-aal     Colin27 T1 on the demo's 2 mm grid (bench/colin27_grid.mjs), deformed by
//                   the demo's field (max 4 voxels, control spacing 16, seed 8); 116 AAL labels;
//                   regkit --similarity lncc (same modality).
//   brats-t1-t2w-affine, brats-t1-flair-affine
//                   multi-modal with a known linear misalignment (issue #18): T1 (moving) ->
//                   T2w (the pair the regkit options were tuned on) or FLAIR (held out: other
//                   deformation seed, other misalignment), each deformed by a smooth field
//                   and then by an affine about the grid centre (`regkit deform --rotate
//                   --scale --translate`, >= 10 deg, >= 5 %, >= 5 voxels); elastix runs
//                   affine + B-spline (bench/elastix/affine_mattes.txt, then
//                   bspline_mattes.txt), regkit its default pipeline (affine, then velocity)
//                   once per similarity (mi and mind), each row op CASE/SIMILARITY beside the
//                   one elastix run.
//   brats-t1-flair  /work/shared/data/read-only/brats_case (or $REGKIT_BRATS_DIR): T1 (moving)
//                   -> FLAIR deformed (max 5 voxels, control spacing 24, seed 5); the tumour
//                   segmentation (labels 1, 2, 3) is on the same grid as both images, so the
//                   fixed labels are the deformed segmentation; regkit --similarity lncc (squared local NCC is invariant to local linear intensity maps; it beat MI here).
//                   Skipped with a message when the folder is absent.

import { spawnSync } from 'node:child_process';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const cliDir = resolve(here, '..');
const repo = resolve(cliDir, '..', '..');
const BIN = join(cliDir, 'dist', 'bin.js');
const PARAMS = join(here, 'elastix', 'bspline_mattes.txt');
const AFFINE_PARAMS = join(here, 'elastix', 'affine_mattes.txt');
const RESULTS = join(here, 'results', 'elastix.jsonl');
const BRATS_DIR = process.env.REGKIT_BRATS_DIR || '/work/shared/data/read-only/brats_case';

// Per-case `regkit register` arguments (on top of --similarity). Tune here; `--extra
// CASE=ARGS` replaces them for one run. Tried on the 2-core machine, which other jobs share:
// times move with its load (elastix, with 2 threads, gains most from an idle machine). Dice;
// wall s at load ~1 (at load 3-5); regkit's defaults are --iterations 150,100,60.
//   colin27-aal, before 0.738; elastix 0.972 in 19 s (38 s):
//     defaults 0.993 (68-84 s); 30,20,20 0.983 in 16 s (31 s); 30,20,15 0.977 in 12-14 s;
//     20,10,15 0.974 in 12-13 s; 20,10,12 0.967 in 9.5 s; 30,20,10 0.964 (19 s);
//     --transform displacement 60,40,20 0.965 (28 s); 40,30,20 --learning-rate 0.5 0.968;
//     --skip-finest 1 0.961 (24 s); 1,1,1 0.859 in 3.9 s (start-up, I/O, label warp).
//   brats-t1-flair, before 0.831; elastix 0.798 in 34 s (77 s); MI lowers the tumour Dice
//   except with regkit's full schedule or MIND:
//     defaults 0.868 (595 s); --iterations 60,40,10 0.803 (132 s);
//     --skip-finest 1: 150,100 0.816 (145 s), 60,40 0.819 (73 s), 30,20 0.813 in 43 s,
//     20,10 0.806 in 31-33 s; --skip-finest 2: 150 0.779 (57 s), 10 0.760 in 21 s,
//     1 0.799 in 15 s (start-up and I/O at 1 mm);
//     --similarity mind --skip-finest 1 --iterations 30,20,0 0.903 in 831 s,
//     --similarity mind --skip-finest 2 --iterations 40,0,0 0.859 in 183 s.
//   (With --skip-finest N the last N entries of --iterations are unused; 3 must be listed.)
// After the speed-ups of 2026-11-21 (fast SplitV, dense-matrix smoothing of the velocity,
// Jacobian statistics in one pass): colin27-aal 30,20,15 0.976 in 10.8-13.6 s against elastix
// 20.1-27.3 s (ratio 0.50, 0.64, 0.50 in three runs); brats-t1-flair 20,10 0.873 in 14.7-17.2 s
// (was 32-36 s, 4 GB RSS) against 37.6-46.8 s (ratio 0.31-0.46).
// elastix runs a B-spline stage alone (bspline_mattes.txt), so regkit runs its deformable stage
// alone too (`--transform velocity`; since 2026-12-07 the default pipeline puts an affine stage
// first): the figures above are of that configuration.
const REGKIT_ARGS = {
  'colin27-aal': ['--transform', 'velocity', '--iterations', '30,20,15'],
  'brats-t1-flair': ['--transform', 'velocity', '--skip-finest', '1', '--iterations', '20,10,0'],
  // The default pipeline (affine, then velocity), tuned on brats-t1-t2w-affine only (elastix
  // affine + B-spline 0.756 in 59 s at load ~9); Dice, wall s (load; other jobs shared the
  // 2-core machine, so times moved 2x with it):
  //   mi   --skip-finest 1 --iterations 20,10,0                                0.795, 50 s (9)
  //   mi   --affine-iterations 60,30,0 --skip-finest 1 --iterations 20,10,0    0.800, 42 s (14)
  //   mi   --affine-iterations 40,20,0 --skip-finest 2 --iterations 40,0,0     0.764, 40 s (21)
  //   mind --skip-finest 1 --iterations 20,10,0: out of the wasm heap (the affine stage's
  //        finest level computes 12-channel MIND features of the full 240x240x155 grid)
  //   mind --affine-iterations 60,30,0 --skip-finest 1 --iterations 20,10,0    0.902, 86 s (10)
  //   mind --affine-iterations 60,30,0 --skip-finest 2 --iterations 40,0,0     0.876, 115 s (26)
  // Since 2026-12-07 (issue #18) mind also compares --samples 32768 random voxels per
  // iteration by default (interpolating only those points; the affine stage samples 4096),
  // and both stages share one pyramid and MIND features: same flags, load ~35, CPU s:
  //   mind (every voxel, before)                              0.902, 34 s cpu (idle)
  //   mind (--samples 32768, the default now)                 0.899, 19 s cpu
  //   mind --affine-iterations 80,0,0 (samples 32768)         0.897, 19 s cpu
  //   mind --iterations 20,5,0 --samples 16384                0.872, 15 s cpu
  // and, run two at a time at load ~10 (mind 20,10,0 with the old code, every voxel, beside
  // the new: 52.2 against 23.1 CPU s, 0.44x):
  //   mind --iterations 20,5,0                                 0.875, 18.9 s cpu  (chosen)
  //   mind --affine-iterations 60,15,0 --iterations 20,5,0 --samples 16384   0.869, 16.6 s cpu
  'brats-t1-t2w-affine/mi': [
    '--affine-iterations',
    '60,30,0',
    '--skip-finest',
    '1',
    '--iterations',
    '20,10,0',
  ],
  'brats-t1-t2w-affine/mind': [
    '--affine-iterations',
    '60,30,0',
    '--skip-finest',
    '1',
    '--iterations',
    '20,5,0',
  ],
};
REGKIT_ARGS['brats-t1-flair-affine/mi'] = REGKIT_ARGS['brats-t1-t2w-affine/mi'];
REGKIT_ARGS['brats-t1-flair-affine/mind'] = REGKIT_ARGS['brats-t1-t2w-affine/mind'];

// ---- arguments -----------------------------------------------------------------------------
const argv = process.argv.slice(2);
const flag = (name) => argv.includes(`--${name}`);
function values(name) {
  const out = [];
  argv.forEach((a, i) => {
    if (a === `--${name}` && i + 1 < argv.length) out.push(argv[i + 1]);
    else if (a.startsWith(`--${name}=`)) out.push(a.slice(name.length + 3));
  });
  return out;
}
const value = (name, fallback) => values(name).pop() ?? fallback;
const known = new Set([
  'cases',
  'full',
  'threads',
  'extra',
  'skip-elastix',
  'no-save',
  'keep',
  'work',
  'help',
  'h',
]);
for (const a of argv) {
  const m = /^--?([^=]+)/.exec(a);
  if (m && !known.has(m[1])) fail(`unknown option ${a}`, 2);
}
if (flag('help') || flag('h')) {
  const text = readFileSync(fileURLToPath(import.meta.url), 'utf8')
    .split('\n')
    .slice(1);
  const head = text.slice(
    0,
    text.findIndex((l) => !l.startsWith('//')),
  );
  process.stdout.write(`${head.map((l) => l.replace(/^\/\/ ?/, '')).join('\n')}\n`);
  process.exit(0);
}
const full = flag('full');
const threads = Number(value('threads', String(os.availableParallelism?.() ?? os.cpus().length)));
const skipElastix = flag('skip-elastix');
const save = !flag('no-save') && !skipElastix;
const CASE_NAMES = [
  'colin27-aal',
  'brats-t1-flair',
  'brats-t1-t2w-affine',
  'brats-t1-flair-affine',
];
const caseNames = value('cases', 'colin27-aal,brats-t1-flair').split(',').filter(Boolean);
for (const c of caseNames) {
  if (!CASE_NAMES.includes(c)) fail(`unknown case '${c}' (known: ${CASE_NAMES.join(', ')})`, 2);
}
const extra = {};
for (const e of values('extra')) {
  const i = e.indexOf('=');
  if (i < 0) fail(`--extra wants CASE=ARGS, got '${e}'`, 2);
  extra[e.slice(0, i)] = e
    .slice(i + 1)
    .trim()
    .split(/\s+/)
    .filter(Boolean);
}

function fail(msg, code = 1) {
  process.stderr.write(`elastix_vs_regkit: ${msg}\n`);
  process.exit(code);
}
const log = (msg) => process.stderr.write(`${msg}\n`);

if (!existsSync(BIN))
  fail(`${relative(repo, BIN)} is missing: build first (pnpm --filter @regkit/cli exec tsup)`);
// Without elastix there is nothing to compare with: say so and leave the results alone (exit 0,
// so that `pnpm bench` goes on with the other packages).
const missing = ['elastix', 'transformix'].filter(
  (tool) => spawnSync(tool, ['--version'], { encoding: 'utf8' }).error,
);
if (missing.length && !skipElastix) {
  log(
    `elastix_vs_regkit: skipped: ${missing.join(' and ')} not on PATH (Debian: apt-get install elastix)`,
  );
  process.exit(0);
}
const elastixVersion = missing.length
  ? 'none'
  : ((spawnSync('elastix', ['--version'], { encoding: 'utf8' }).stdout ?? '').match(/[\d.]+/) ?? [
      '?',
    ])[0];
const regkitBackend = (() => {
  if (process.env.REGKIT_BACKEND) return process.env.REGKIT_BACKEND;
  const req = createRequire(join(cliDir, 'package.json'));
  for (const m of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      req.resolve(m);
      return 'tensorflow';
    } catch {}
  }
  return 'wasm';
})();

// ---- work folder ---------------------------------------------------------------------------
const keep = flag('keep') || values('work').length > 0;
const work = values('work').length
  ? resolve(value('work'))
  : mkdtempSync(join(os.tmpdir(), 'regkit-elastix-'));
mkdirSync(work, { recursive: true });
const show = (p) => {
  const s = String(p);
  if (s === process.execPath) return 'node';
  if (s.startsWith(work)) return `$WORK${s.slice(work.length)}`;
  if (s.startsWith(`${repo}/`)) return relative(repo, s);
  return s;
};
const cmdline = (cmd, args) =>
  [cmd, ...args]
    .map((a) =>
      /[\s"'$]/.test(show(a)) && !show(a).startsWith('$WORK') ? JSON.stringify(show(a)) : show(a),
    )
    .join(' ');

/** Runs a command under /usr/bin/time (when present): wall seconds, CPU seconds, peak RSS. */
function run(cmd, args, { quiet = false } = {}) {
  const hasTime = existsSync('/usr/bin/time');
  const timeFile = join(work, `.time.${process.pid}`);
  const spawnArgs = hasTime
    ? ['/usr/bin/time', ['-f', '%U %S %M', '-o', timeFile, cmd, ...args]]
    : [cmd, args];
  const t0 = process.hrtime.bigint();
  const r = spawnSync(spawnArgs[0], spawnArgs[1], {
    cwd: repo,
    encoding: 'utf8',
    maxBuffer: 1 << 28,
    env: process.env,
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const command = cmdline(cmd, args);
  if (r.error || r.status !== 0) {
    const tail = `${r.stderr ?? ''}${r.stdout ?? ''}`.trim().split('\n').slice(-15).join('\n');
    throw new Error(`failed (exit ${r.status}): ${command}\n${tail}`);
  }
  let cpuSeconds = null;
  let peakRssMb = null;
  if (hasTime && existsSync(timeFile)) {
    const [u, s, m] = readFileSync(timeFile, 'utf8')
      .trim()
      .split('\n')
      .pop()
      .split(/\s+/)
      .map(Number);
    cpuSeconds = u + s;
    peakRssMb = m / 1024;
    rmSync(timeFile, { force: true });
  }
  if (!quiet) log(`  ${command}  (${seconds.toFixed(1)} s)`);
  return { stdout: r.stdout, seconds, cpuSeconds, peakRssMb, command };
}
const jsonOf = (stdout) =>
  JSON.parse(
    stdout
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .pop(),
  );
const regkit = (args, opts) => run(process.execPath, [BIN, ...args], opts);

function evalDice(fixedLabels, warpedLabels) {
  const r = regkit(
    ['eval', '--fixed-labels', fixedLabels, '--warped-labels', warpedLabels, '--json'],
    { quiet: true },
  );
  const s = jsonOf(r.stdout);
  return { dice: s.meanDice, hd95: s.meanHd95, labels: s.labels.length };
}

function header(file) {
  return jsonOf(regkit(['info', '--json', file], { quiet: true }).stdout);
}

/** The grids must agree in voxels and in world coordinates (eval only compares shapes). */
function checkSameGrid(a, b) {
  const ha = header(a);
  const hb = header(b);
  const same =
    ha.shape.join() === hb.shape.join() &&
    ha.affine.flat().every((v, i) => Math.abs(v - hb.affine.flat()[i]) < 1e-3);
  if (!same) {
    throw new Error(
      `${show(b)} is not on the grid of ${show(a)}: ${JSON.stringify(hb.affine)} vs ${JSON.stringify(ha.affine)}`,
    );
  }
  return ha;
}

// ---- cases ---------------------------------------------------------------------------------
const CASES = {
  'colin27-aal': {
    description: `Colin27 T1 at ${full ? 1 : 2} mm -> itself deformed (max 4 voxels, control spacing 16, seed 8); 116 AAL labels`,
    similarity: 'lncc',
    deform: { maxDisplacement: 4, controlSpacing: 16, seed: 8 },
    prepare(dir) {
      if (full) {
        const data = join(cliDir, 'data');
        return {
          image: join(data, 'colin27_ch2_t1.nii.gz'),
          labels: join(data, 'colin27_aal_labels.nii.gz'),
          moving: join(data, 'colin27_ch2_t1.nii.gz'),
          movingLabels: join(data, 'colin27_aal_labels.nii.gz'),
        };
      }
      const r = run(process.execPath, [
        join(here, 'colin27_grid.mjs'),
        '--mm',
        '2',
        '--out-dir',
        dir,
      ]);
      const s = jsonOf(r.stdout);
      return {
        image: s.t1,
        labels: s.labels,
        moving: s.t1,
        movingLabels: s.labels,
        prepareCommand: r.command,
      };
    },
  },
  'brats-t1-flair': {
    description:
      'BraTS T1 -> FLAIR deformed (max 5 voxels, control spacing 24, seed 5); tumour labels 1, 2, 3',
    similarity: 'lncc',
    deform: { maxDisplacement: 5, controlSpacing: 24, seed: 5 },
    skip: () => (existsSync(join(BRATS_DIR, 't2f_flair.nii.gz')) ? null : `${BRATS_DIR} is absent`),
    prepare() {
      return {
        image: join(BRATS_DIR, 't2f_flair.nii.gz'),
        labels: join(BRATS_DIR, 'seg_auto_BraTS25_2.nii.gz'),
        moving: join(BRATS_DIR, 't1n.nii.gz'),
        movingLabels: join(BRATS_DIR, 'seg_auto_BraTS25_2.nii.gz'),
      };
    },
  },
};

/** A BraTS case T1 -> `target` with a smooth deformation and a linear misalignment. */
function bratsAffineCase(target, label, deform) {
  const l = deform.linear;
  return {
    description: `BraTS T1 -> ${label} deformed (max ${deform.maxDisplacement} voxels, control spacing ${deform.controlSpacing}, seed ${deform.seed}), then rotated ${l.rotate.join(',')} deg, scaled ${l.scale}, translated ${l.translate.join(',')} voxels; tumour labels 1, 2, 3`,
    similarities: ['mi', 'mind'],
    elastixParams: [AFFINE_PARAMS, PARAMS],
    deform,
    skip: () => (existsSync(join(BRATS_DIR, target)) ? null : `${BRATS_DIR} is absent`),
    prepare() {
      return {
        image: join(BRATS_DIR, target),
        labels: join(BRATS_DIR, 'seg_auto_BraTS25_2.nii.gz'),
        moving: join(BRATS_DIR, 't1n.nii.gz'),
        movingLabels: join(BRATS_DIR, 'seg_auto_BraTS25_2.nii.gz'),
      };
    },
  };
}
// tuning pair and held-out pair: other target contrast, deformation seed and misalignment
CASES['brats-t1-t2w-affine'] = bratsAffineCase('t2w.nii.gz', 'T2w', {
  maxDisplacement: 5,
  controlSpacing: 24,
  seed: 11,
  linear: { rotate: [12, 0, 0], scale: 1.06, translate: [5, -5, 5] },
});
CASES['brats-t1-flair-affine'] = bratsAffineCase('t2f_flair.nii.gz', 'FLAIR', {
  maxDisplacement: 5,
  controlSpacing: 24,
  seed: 23,
  linear: { rotate: [0, 0, -11], scale: 0.95, translate: [-5, 6, -5] },
});

/** elastix's label transform: the TransformParameters file with nearest-neighbour resampling. */
function nearestNeighbourCopy(tpFile, outFile) {
  let text = readFileSync(tpFile, 'utf8');
  const set = (key, val) => {
    const re = new RegExp(`^\\s*\\(${key}\\s[^)]*\\)\\s*$`, 'm');
    const line = `(${key} ${val})`;
    text = re.test(text) ? text.replace(re, line) : `${text.trimEnd()}\n${line}\n`;
  };
  // A B-spline of order 0 is nearest neighbour. (FinalNearestNeighborInterpolator would say
  // so directly, but Debian's elastix 5.0.1 is built without it.)
  set('ResampleInterpolator', '"FinalBSplineInterpolator"');
  set('FinalBSplineInterpolationOrder', '0');
  set('ResultImagePixelType', '"short"');
  set('ResultImageFormat', '"nii.gz"');
  set('DefaultPixelValue', '0');
  writeFileSync(outFile, text);
}

// ---- run -----------------------------------------------------------------------------------
const machineThreads = os.availableParallelism?.() ?? os.cpus().length;
const benchCommand = `node packages/cli/bench/elastix_vs_regkit.mjs ${argv.join(' ')}`.trim();
const lines = [JSON.stringify({ command: benchCommand })];
const summary = [];
log(
  `work folder: ${work}${keep ? ' (kept)' : ''}; elastix ${elastixVersion} -threads ${threads}; regkit backend ${regkitBackend}`,
);

try {
  for (const name of caseNames) {
    const c = CASES[name];
    const why = c.skip?.();
    if (why) {
      log(`${name}: skipped (${why})`);
      continue;
    }
    log(`${name}: ${c.description}`);
    const dir = join(work, name);
    mkdirSync(dir, { recursive: true });
    const src = c.prepare(dir);
    const fixed = join(dir, 'fixed.nii.gz');
    const fixedLabels = join(dir, 'fixed_labels.nii.gz');
    const deform = regkit([
      'deform',
      '--image',
      src.image,
      '--labels',
      src.labels,
      '--out',
      fixed,
      '--out-labels',
      fixedLabels,
      '--true-field',
      join(dir, 'true_field.nii.gz'),
      '--max-displacement',
      String(c.deform.maxDisplacement),
      '--control-spacing',
      String(c.deform.controlSpacing),
      '--seed',
      String(c.deform.seed),
      ...(c.deform.linear
        ? [
            '--rotate',
            c.deform.linear.rotate.join(','),
            '--scale',
            String(c.deform.linear.scale),
            '--translate',
            c.deform.linear.translate.join(','),
          ]
        : []),
      '--json',
      '--force',
    ]);
    const fixedHeader = checkSameGrid(fixed, src.moving);
    checkSameGrid(fixed, src.movingLabels);
    const shape = fixedHeader.shape;
    const size = shape.join('x');
    const before = evalDice(fixedLabels, src.movingLabels);
    log(`  Dice before registration ${before.dice.toFixed(4)} (${before.labels} labels)`);
    // Every key besides the standard ones ends up in BENCHMARKS.md's notes column, so the
    // records stay small; the exact commands go to `command` (not shown there) and to
    // {"command"} lines (listed under BENCHMARKS.md's Commands).
    const common = {
      suite: 'registration',
      threads,
      op: name,
      size,
      runs: 1,
      machine_threads: machineThreads,
    };
    // peak memory per voxel of the fixed grid (the target for 3D `register`: ≤ 100 bytes)
    const voxels = shape.reduce((a, b) => a * b, 1);
    const perVoxel = (mb) => (mb ? round((mb * 1048576) / voxels, 0) : null);
    const evalCmd = (warped) =>
      cmdline('node', [
        BIN,
        'eval',
        '--fixed-labels',
        fixedLabels,
        '--warped-labels',
        warped,
        '--json',
      ]);
    const commands = [
      `# ${name}: ${c.description}`,
      ...(src.prepareCommand ? [src.prepareCommand] : []),
      deform.command,
      `${evalCmd(src.movingLabels)}  # Dice before registration`,
    ];
    const results = {};

    // (b) elastix + transformix
    if (!skipElastix) {
      const outDir = join(dir, 'elastix');
      const tfxDir = join(dir, 'transformix');
      rmSync(outDir, { recursive: true, force: true });
      rmSync(tfxDir, { recursive: true, force: true });
      mkdirSync(outDir);
      mkdirSync(tfxDir);
      const load = os.loadavg()[0];
      const t0 = process.hrtime.bigint();
      const params = c.elastixParams ?? [PARAMS];
      const e = run('elastix', [
        '-f',
        fixed,
        '-m',
        src.moving,
        ...params.flatMap((p) => ['-p', p]),
        '-out',
        outDir,
        '-threads',
        String(threads),
      ]);
      // the last stage's file (it names the earlier ones as its initial transforms)
      const tp = join(outDir, `TransformParameters.${params.length - 1}.txt`);
      const tpNN = join(outDir, 'TransformParameters.labels.txt');
      nearestNeighbourCopy(tp, tpNN);
      const t = run('transformix', [
        '-in',
        src.movingLabels,
        '-tp',
        tpNN,
        '-out',
        tfxDir,
        '-threads',
        String(threads),
      ]);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const warpedLabels = join(tfxDir, 'result.nii.gz');
      checkSameGrid(fixedLabels, warpedLabels);
      const after = evalDice(fixedLabels, warpedLabels);
      // what nearestNeighbourCopy() does, as the equivalent shell command
      const sedCmd = `sed -e 's/^(FinalBSplineInterpolationOrder .*)/(FinalBSplineInterpolationOrder 0)/' -e 's/^(ResultImagePixelType .*)/(ResultImagePixelType "short")/' ${show(tp)} > ${show(tpNN)}`;
      commands.push(
        `${e.command}  # timed with the next two`,
        sedCmd,
        t.command,
        evalCmd(warpedLabels),
      );
      results.elastix = {
        ...common,
        impl: 'elastix',
        backend: `elastix ${elastixVersion}`,
        ms: round(seconds * 1000, 0),
        peak_rss_mb: round(Math.max(e.peakRssMb ?? 0, t.peakRssMb ?? 0), 1),
        peak_bytes_per_voxel: perVoxel(Math.max(e.peakRssMb ?? 0, t.peakRssMb ?? 0)),
        dice: round(after.dice),
        hd95_mm: round(after.hd95, 2),
        elastix_s: round(e.seconds, 1),
        transformix_s: round(t.seconds, 1),
        cpu_s: round((e.cpuSeconds ?? 0) + (t.cpuSeconds ?? 0), 1),
        load: round(load, 2),
        command: `${e.command} && ${sedCmd} && ${t.command}`,
      };
      log(`  elastix: Dice ${after.dice.toFixed(4)} in ${seconds.toFixed(1)} s`);
    }

    // (c) regkit register, once per similarity
    const similarities = c.similarities ?? [c.similarity];
    for (const similarity of similarities) {
      const key = c.similarities ? `${name}/${similarity}` : name;
      const tuned = extra[key] ?? extra[name] ?? REGKIT_ARGS[key] ?? [];
      const labelsOut = join(dir, `regkit_${similarity}_labels.nii.gz`);
      const args = [
        'register',
        '--fixed',
        fixed,
        '--moving',
        src.moving,
        '--out',
        join(dir, `regkit_${similarity}_warped.nii.gz`),
        '--moving-labels',
        src.movingLabels,
        '--out-labels',
        labelsOut,
        '--similarity',
        similarity,
        ...tuned,
        '--json',
        '--force',
      ];
      const load = os.loadavg()[0];
      const r = regkit(args);
      const s = jsonOf(r.stdout);
      const after = evalDice(fixedLabels, labelsOut);
      commands.push(r.command, evalCmd(labelsOut));
      results[`regkit/${similarity}`] = {
        ...common,
        op: key,
        impl: 'regkit',
        backend: regkitBackend,
        ms: round(r.seconds * 1000, 0),
        peak_rss_mb: round(r.peakRssMb, 1),
        peak_bytes_per_voxel: perVoxel(r.peakRssMb),
        dice: round(after.dice),
        dice_before: round(before.dice),
        labels: before.labels,
        hd95_mm: round(after.hd95, 2),
        options: [`--similarity ${similarity}`, ...tuned].join(' '),
        folding_percent: round(s.foldingPercent, 4),
        cpu_s: round(r.cpuSeconds, 1),
        load: round(load, 2),
        command: r.command,
      };
      log(
        `  regkit --similarity ${similarity}: Dice ${after.dice.toFixed(4)}, folding ${s.foldingPercent} %, in ${r.seconds.toFixed(1)} s`,
      );
    }

    const regkitKeys = similarities.map((sim) => `regkit/${sim}`);
    if (results.elastix) {
      const e = results.elastix;
      for (const k of regkitKeys.map((key) => results[key])) {
        k.target = k.dice >= e.dice && k.ms <= 0.5 * e.ms ? 'met' : 'missed';
      }
    }
    for (const command of commands) lines.push(JSON.stringify({ command }));
    // one elastix record per regkit row (BENCHMARKS.md pairs rows by op): the same run
    const records = [
      ...(results.elastix
        ? regkitKeys.map((key) => ({ ...results.elastix, op: results[key].op }))
        : []),
      ...regkitKeys.map((key) => results[key]),
    ];
    for (const rec of records) {
      const line = JSON.stringify(rec);
      process.stdout.write(`${line}\n`);
      lines.push(line);
    }
    for (const key of regkitKeys) {
      summary.push({
        name: results[key].op,
        size,
        before,
        elastix: results.elastix,
        regkit: results[key],
      });
    }
  }
} finally {
  if (!keep) rmSync(work, { recursive: true, force: true });
}

if (save && summary.length) {
  mkdirSync(dirname(RESULTS), { recursive: true });
  appendFileSync(RESULTS, `${lines.join('\n')}\n`);
  log(`appended to ${relative(repo, RESULTS)}`);
}

// ---- table ---------------------------------------------------------------------------------
log('');
if (summary.length === 0) log('no case ran');
log(
  '| case | size | Dice before | elastix Dice | elastix s | regkit Dice | regkit s | regkit/elastix time | target |',
);
log('|---|---|---:|---:|---:|---:|---:|---:|---|');
for (const s of summary) {
  const e = s.elastix;
  const k = s.regkit;
  log(
    `| ${s.name} | ${s.size} | ${s.before.dice.toFixed(4)} | ${e ? e.dice.toFixed(4) : '—'} | ${e ? (e.ms / 1000).toFixed(1) : '—'} | ${k.dice.toFixed(4)} | ${(k.ms / 1000).toFixed(1)} | ${e ? (k.ms / e.ms).toFixed(3) : '—'} | ${k.target ?? '—'} |`,
  );
}

function round(v, digits = 4) {
  if (v === null || v === undefined || !Number.isFinite(v)) return null;
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}
