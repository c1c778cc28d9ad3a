#!/usr/bin/env node
/**
 * Consumer-side check: installs the packed packages the way a user does and uses them.
 *
 *   pnpm check:consumer            (builds the packages first, then runs this script)
 *   node scripts/consumer-check.mjs [--keep] [--skip-demo]
 *
 * 1. `pnpm pack` every publishable package (pnpm rewrites `workspace:` ranges) into a temp dir;
 * 2. inspects each tarball: no `workspace:` range left, `type: module`, `engines`, repository
 *    (with `directory`), homepage, bugs, LICENSE, README with "ESM only" and no relative links,
 *    every file named by `main`/`types`/`exports`/`bin` present, and @regkit/cli listing every
 *    @regkit package it needs at run time as a dependency (no reliance on auto-installed peers);
 * 3. `npm init -y` a fresh ESM project and `npm install`s the tarballs plus the peers a user
 *    installs (`@tensorflow/tfjs-core`), with typescript, @types/node and esbuild as dev tools;
 *    checks that every @regkit package and tfjs-core is installed once, from the tarballs;
 * 4. runs a user script: `initBackend()` with the kernels, `warp`, `localNccLoss`, a `tf.grad`
 *    gradient and a NIfTI round trip with @regkit/io, checking the numbers;
 * 5. runs the installed bin: `npx regkit --version`, `npx regkit demo --case 2d` (bundled data);
 * 6. type-checks a strict TypeScript user file under `moduleResolution` nodenext and bundler;
 * 7. bundles a browser entry importing core, kernels, losses, io, register and networks with
 *    esbuild (`--platform=browser --format=esm`), prints its size (raw and gzipped) and checks
 *    that it holds one copy of tfjs-core (core's browser build inlines none of it).
 *
 * Every step is logged with its time; the script carries on after a failed step where it can,
 * prints a summary and exits 1 if any step failed. Temp dirs are removed (`--keep` keeps them).
 * Network: only the npm registry (npm install).
 */
import { spawnSync } from 'node:child_process';
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
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const REPO_URL = 'git+https://github.com/regkit/regkit.git';
/** A string found once in tfjs-core's engine.js: counts the copies of tfjs-core in a bundle. */
const ENGINE_MARK = 'Please provide a function to tidy()';
const args = new Set(process.argv.slice(2));
const KEEP = args.has('--keep');
const SKIP_DEMO = args.has('--skip-demo');

const failures = [];
const t0 = performance.now();
const secs = (t) => ((performance.now() - t) / 1000).toFixed(1);

/** Runs one named step; logs its time and any failure (a thrown Error or returned problems). */
async function step(name, fn) {
  const t = performance.now();
  console.log(`\n▶ ${name}`);
  try {
    const problems = (await fn()) ?? [];
    if (problems.length) {
      for (const p of problems) console.log(`  ✗ ${p}`);
      failures.push(...problems.map((p) => `${name}: ${p}`));
      console.log(`✗ ${name} (${secs(t)} s, ${problems.length} problem(s))`);
      return false;
    }
    console.log(`✓ ${name} (${secs(t)} s)`);
    return true;
  } catch (e) {
    const msg = String(e?.message ?? e).trim();
    console.log(`  ✗ ${msg.split('\n').join('\n    ')}`);
    failures.push(`${name}: ${msg.split('\n')[0]}`);
    console.log(`✗ ${name} (${secs(t)} s)`);
    return false;
  }
}

/** Runs a command; throws with its output when it fails; returns stdout. */
function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    ...opts,
    env: { ...process.env, npm_config_update_notifier: 'false', ...opts.env },
  });
  if (r.error) throw r.error;
  if (r.status !== 0) {
    const out = `${r.stdout ?? ''}\n${r.stderr ?? ''}`.trim().split('\n').slice(-40).join('\n');
    throw new Error(`${cmd} ${argv.join(' ')} exited with ${r.status}\n${out}`);
  }
  return r.stdout;
}

const readJson = (f) => JSON.parse(readFileSync(f, 'utf8'));
const writeJson = (f, v) => writeFileSync(f, `${JSON.stringify(v, null, 2)}\n`);

// the publishable packages, in the order of packages/
const packages = readdirSync(join(ROOT, 'packages'), { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(ROOT, 'packages', d.name, 'package.json')))
  .map((d) => ({ dir: d.name, json: readJson(join(ROOT, 'packages', d.name, 'package.json')) }))
  .filter((p) => !p.json.private);
const names = packages.map((p) => p.json.name);

const tmp = mkdtempSync(join(tmpdir(), 'regkit-consumer-'));
const packDir = join(tmp, 'packs');
const inspectDir = join(tmp, 'inspect');
const app = join(tmp, 'app');
const tarballs = new Map(); // name → absolute path
let installed = false;

function cleanup() {
  if (KEEP) console.log(`\n(temp dir kept: ${tmp})`);
  else rmSync(tmp, { recursive: true, force: true });
}
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});

try {
  console.log(`regkit consumer check: ${names.length} packages, temp dir ${tmp}`);

  await step('pack every publishable package (pnpm pack)', () => {
    mkdirSync(packDir, { recursive: true });
    const problems = [];
    for (const p of packages) {
      const pkgDir = join(ROOT, 'packages', p.dir);
      if (!existsSync(join(pkgDir, 'dist'))) {
        problems.push(`${p.json.name}: no dist/ (run \`pnpm run build:all\` first)`);
        continue;
      }
      const before = new Set(readdirSync(packDir));
      run('pnpm', ['pack', '--pack-destination', packDir], { cwd: pkgDir });
      const made = readdirSync(packDir).filter((f) => !before.has(f) && f.endsWith('.tgz'));
      if (made.length !== 1)
        problems.push(`${p.json.name}: expected one tarball, got ${made.join(', ')}`);
      else tarballs.set(p.json.name, join(packDir, made[0]));
    }
    for (const [name, file] of tarballs)
      console.log(`  ${name} → ${file.slice(packDir.length + 1)}`);
    return problems;
  });

  await step('inspect the tarballs (package.json, README, files)', () => {
    const problems = [];
    const packed = new Map();
    for (const p of packages) {
      const tgz = tarballs.get(p.json.name);
      if (!tgz) continue;
      const dest = join(inspectDir, p.dir);
      mkdirSync(dest, { recursive: true });
      run('tar', ['-xzf', tgz, '-C', dest]);
      const root = join(dest, 'package');
      const pj = readJson(join(root, 'package.json'));
      packed.set(pj.name, pj);
      const say = (m) => problems.push(`${pj.name}: ${m}`);
      for (const field of ['dependencies', 'peerDependencies', 'optionalDependencies']) {
        for (const [dep, range] of Object.entries(pj[field] ?? {})) {
          if (String(range).startsWith('workspace:')) say(`${field}.${dep} is still "${range}"`);
        }
      }
      if (pj.type !== 'module') say(`"type" is ${JSON.stringify(pj.type)}, not "module"`);
      if (!pj.engines?.node) say('no "engines.node"');
      const repo = pj.repository;
      if (
        repo?.type !== 'git' ||
        repo?.url !== REPO_URL ||
        repo?.directory !== `packages/${p.dir}`
      ) {
        say(
          `"repository" is ${JSON.stringify(repo)}, want { type: git, url: ${REPO_URL}, directory: packages/${p.dir} }`,
        );
      }
      if (!pj.homepage?.startsWith('https://')) say('no https "homepage"');
      if (!pj.bugs?.url?.startsWith('https://') && !String(pj.bugs).startsWith('https://'))
        say('no "bugs" url');
      if (!pj.license) say('no "license"');
      if (!existsSync(join(root, 'LICENSE'))) say('no LICENSE file in the tarball');
      const readme = existsSync(join(root, 'README.md'))
        ? readFileSync(join(root, 'README.md'), 'utf8')
        : null;
      if (readme === null) say('no README.md in the tarball');
      else {
        if (!/ESM only/.test(readme.split('\n').slice(0, 15).join('\n')))
          say('README has no "ESM only" line near the top');
        for (const m of readme.matchAll(/\]\((\.\.?\/[^)]*)\)/g))
          say(`README links to relative "${m[1]}" (broken on npm)`);
      }
      // every file the entry points name is in the tarball
      const targets = new Set();
      const walk = (v) => {
        if (typeof v === 'string') targets.add(v);
        else if (v && typeof v === 'object') Object.values(v).forEach(walk);
      };
      walk([pj.main, pj.types, pj.module, pj.exports, pj.bin]);
      for (const t of targets) {
        if (t.startsWith('./') || /^[\w.-]+\//.test(t)) {
          if (!existsSync(join(root, t))) say(`entry "${t}" is not in the tarball`);
        }
      }
    }
    // @regkit/cli installs everything it runs: every @regkit package reachable from its
    // dependencies through dependencies or peers must be one of its own dependencies
    const cli = packed.get('@regkit/cli');
    if (cli) {
      const direct = new Set(Object.keys(cli.dependencies ?? {}));
      const seen = new Set();
      const queue = [...direct].filter((d) => packed.has(d));
      while (queue.length) {
        const d = queue.shift();
        if (seen.has(d)) continue;
        seen.add(d);
        const pj = packed.get(d);
        for (const field of ['dependencies', 'peerDependencies']) {
          for (const [dep] of Object.entries(pj[field] ?? {})) {
            const optional =
              field === 'peerDependencies' && pj.peerDependenciesMeta?.[dep]?.optional;
            if (optional) continue;
            if (dep.startsWith('@regkit/') || dep === '@tensorflow/tfjs-core') {
              if (!direct.has(dep))
                problems.push(
                  `@regkit/cli: needs ${dep} (through ${d}) but does not list it in "dependencies"`,
                );
              if (packed.has(dep)) queue.push(dep);
            }
          }
        }
      }
    }
    const versions = new Set([...packed.values()].map((pj) => pj.version));
    console.log(`  ${packed.size} tarballs inspected; versions ${[...versions].join(', ')}`);
    if (versions.size > 1)
      problems.push(`versions differ (${[...versions].join(', ')}) although they move together`);
    return problems;
  });

  installed = await step('npm install the tarballs into a fresh project (npm init -y)', () => {
    if (tarballs.size !== packages.length) throw new Error('not every package was packed');
    mkdirSync(app, { recursive: true });
    run('npm', ['init', '-y'], { cwd: app });
    const pj = readJson(join(app, 'package.json'));
    writeJson(join(app, 'package.json'), { ...pj, type: 'module', private: true });
    const tfRange = packages.find((p) => p.json.name === '@regkit/core').json.peerDependencies[
      '@tensorflow/tfjs-core'
    ];
    const tsRange = readJson(join(ROOT, 'package.json')).devDependencies.typescript;
    const quiet = ['--no-audit', '--no-fund', '--loglevel=error'];
    // what a user installs: every package (all tarballs at once, so no @regkit name is ever
    // looked up on the registry) and the peer tfjs-core
    run('npm', ['install', ...quiet, ...tarballs.values(), `@tensorflow/tfjs-core@${tfRange}`], {
      cwd: app,
    });
    run(
      'npm',
      [
        'install',
        ...quiet,
        '--save-dev',
        `typescript@${tsRange}`,
        '@types/node@^20',
        'esbuild@^0.27',
      ],
      {
        cwd: app,
      },
    );
    // each @regkit package once, from its tarball; one tfjs-core
    const problems = [];
    const lock = readJson(join(app, 'package-lock.json'));
    for (const [path, entry] of Object.entries(lock.packages ?? {})) {
      const name = path.replace(/^.*node_modules\//, '');
      if (names.includes(name)) {
        if (path !== `node_modules/${name}`)
          problems.push(`${name} installed twice (also at ${path})`);
        else if (!String(entry.resolved ?? '').startsWith('file:'))
          problems.push(`${name} came from ${entry.resolved}, not from its tarball`);
      }
      if (name === '@tensorflow/tfjs-core' && path !== 'node_modules/@tensorflow/tfjs-core') {
        problems.push(
          `@tensorflow/tfjs-core installed twice (also at ${path}, version ${entry.version})`,
        );
      }
    }
    for (const n of names)
      if (!existsSync(join(app, 'node_modules', n, 'package.json')))
        problems.push(`${n} not installed`);
    return problems;
  });

  if (installed) {
    await step(
      'user script: initBackend + kernels, warp, localNccLoss, tf.grad, NIfTI round trip',
      () => {
        writeFileSync(join(app, 'user.mjs'), userScript());
        const out = run('node', ['user.mjs'], {
          cwd: app,
          env: { REGKIT_TMP: join(tmp, 'nifti') },
        });
        console.log(out.trim().replace(/^/gm, '  '));
        if (!out.includes('USER SCRIPT OK')) throw new Error('the user script did not finish');
      },
    );

    await step('installed bin: npx regkit --version, demo --help', () => {
      const version = run('npx', ['--no-install', 'regkit', '--version'], { cwd: app }).trim();
      const want = packages.find((p) => p.json.name === '@regkit/cli').json.version;
      console.log(`  regkit --version → ${version}`);
      const help = run('npx', ['--no-install', 'regkit', 'demo', '--help'], { cwd: app });
      const problems = [];
      if (version !== want) problems.push(`regkit --version printed "${version}", want ${want}`);
      if (!help.includes('--case')) problems.push('`regkit demo --help` does not list --case');
      return problems;
    });

    if (!SKIP_DEMO) {
      await step('installed bin: npx regkit demo --case 2d (bundled data)', () => {
        const outDir = join(tmp, 'demo');
        const out = run(
          'npx',
          ['--no-install', 'regkit', 'demo', '--case', '2d', '--json', '--out-dir', outDir],
          {
            cwd: app,
          },
        );
        const summary = JSON.parse(out.trim().split('\n').at(-1));
        const c = summary.cases?.[0];
        if (!c) throw new Error(`no case in the summary: ${out.slice(0, 500)}`);
        console.log(
          `  backend ${summary.backend}, ${c.name}: Dice ${c.diceBefore.toFixed(3)} → ${c.diceAfter.toFixed(3)}, ` +
            `displacement error ${c.displacementErrorBefore.toFixed(2)} → ${c.displacementErrorAfter.toFixed(2)} vox, ` +
            `folding ${c.foldingPercent}%, ${c.seconds.toFixed(1)} s`,
        );
        const problems = [];
        if (!(c.diceAfter > c.diceBefore + 0.1))
          problems.push(`Dice did not improve (${c.diceBefore} → ${c.diceAfter})`);
        if (!(c.displacementErrorAfter < c.displacementErrorBefore))
          problems.push('displacement error did not drop');
        for (const f of c.outputs ?? []) if (!existsSync(f)) problems.push(`output ${f} missing`);
        if (!(c.outputs?.length > 0)) problems.push('no outputs listed');
        return problems;
      });
    }

    for (const mode of ['nodenext', 'bundler']) {
      await step(`tsc --strict --noEmit, moduleResolution ${mode}`, () => {
        writeFileSync(join(app, 'user.ts'), userTs());
        const module = mode === 'nodenext' ? 'nodenext' : 'esnext';
        const tsc = join(app, 'node_modules', 'typescript', 'bin', 'tsc');
        const argv = [
          ...[tsc, '--strict', '--noEmit', '--target', 'es2022', '--module', module],
          ...['--moduleResolution', mode, 'user.ts'],
        ];
        run('node', argv, { cwd: app });
      });
    }

    await step(
      'esbuild --bundle --platform=browser --format=esm (core, kernels, losses, io, register, networks)',
      () => {
        writeFileSync(join(app, 'browser.mjs'), browserEntry());
        const esbuild = join(app, 'node_modules', '.bin', 'esbuild');
        const argv = [
          'browser.mjs',
          '--bundle',
          '--platform=browser',
          '--format=esm',
          '--outfile=browser-bundle.js',
        ];
        const r = spawnSync(esbuild, [...argv, '--log-level=warning', '--log-limit=0'], {
          cwd: app,
          encoding: 'utf8',
        });
        const log = `${r.stdout}\n${r.stderr}`.trim();
        if (r.status === 0) {
          const bundle = readFileSync(join(app, 'browser-bundle.js'));
          const gz = gzipSync(bundle).length;
          // tfjs-core's engine once: @regkit/core's browser build leaves every @tensorflow
          // import to the bundler (its Node build inlines tfjs-core's gradient registrations)
          const engines = bundle.toString('utf8').split(ENGINE_MARK).length - 1;
          console.log(
            `  bundle ${(bundle.length / 1e6).toFixed(2)} MB, ${(gz / 1e3).toFixed(0)} KB gzipped (zlib level 6); ` +
              `tfjs-core engines in it: ${engines}${log ? `; esbuild said:\n${log.replace(/^/gm, '    ')}` : ''}`,
          );
          return engines === 1
            ? []
            : [
                `the bundle holds ${engines} copies of tfjs-core's engine ("${ENGINE_MARK}"), want 1`,
              ];
        }
        // one finding per error: the message and where it is
        const findings = [];
        const lines = log.split('\n');
        for (let i = 0; i < lines.length; i++) {
          const m = lines[i].match(/✘ \[ERROR\] (.*)/);
          if (!m) continue;
          const where = lines.slice(i + 1, i + 4).find((l) => /^\s+\S+:\d+:\d+:/.test(l));
          findings.push(`${m[1]}${where ? ` at ${where.trim().replace(/:$/, '')}` : ''}`);
        }
        return findings.length ? findings : [log || `esbuild exited with ${r.status}`];
      },
    );
  }
} finally {
  console.log(`\n${'─'.repeat(72)}`);
  if (failures.length) {
    console.log(`consumer check FAILED (${failures.length} problem(s), ${secs(t0)} s):`);
    for (const f of failures) console.log(`  - ${f}`);
  } else console.log(`consumer check passed (${secs(t0)} s)`);
  cleanup();
}
process.exit(failures.length ? 1 : 0);

// ─── the user's files ────────────────────────────────────────────────────────────────────

/** What a user writes in Node after `npm install @regkit/core @regkit/kernels ...`. */
function userScript() {
  return `import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend, randomSmoothField, warp } from '@regkit/core';
import { localNccLoss } from '@regkit/losses';
import { readNifti, writeNifti } from '@regkit/io';

const backend = await initBackend(undefined, { kernels: await import('@regkit/kernels') });
console.log('backend', backend, '| tfjs-core', tf.version_core);
assert.ok(['wasm', 'cpu', 'tensorflow'].includes(backend));

// a smooth 2D image and a known shift: warp by +1 voxel along axis 0 moves it by one row
const [H, W] = [24, 20];
const v = new Float32Array(H * W);
for (let i = 0; i < H; i++) for (let j = 0; j < W; j++) v[i * W + j] = Math.sin(i / 3) + Math.cos(j / 4);
const moving = tf.tensor4d(v, [1, H, W, 1]);
const shift = tf.mul(tf.ones([1, H, W, 2]), tf.tensor1d([1, 0]));
const moved = warp(moving, shift);
const mv = moved.dataSync();
assert.ok(Math.abs(mv[5 * W + 7] - v[6 * W + 7]) < 1e-5, 'warp by +1 along axis 0 reads the next row');
console.log('warp ok: moved[5, 7] =', mv[5 * W + 7].toFixed(5));

// local NCC: an image with itself is -1 (minimised), a random field makes it worse
const self = localNccLoss(moving, moving, { window: 5 }).dataSync()[0];
const u = randomSmoothField([H, W], { maxDisplacement: 2, seed: 3 });
const worse = localNccLoss(moving, warp(moving, u), { window: 5 }).dataSync()[0];
console.log('localNccLoss: self', self.toFixed(4), '| deformed', worse.toFixed(4));
assert.ok(self < -0.99 && worse > self, 'localNccLoss');

// a gradient through warp and the loss with respect to the field
const g = tf.grad((field) => localNccLoss(moving, warp(moving, field), { window: 5 }))(u);
const gv = g.dataSync();
assert.deepEqual(g.shape, [1, H, W, 2]);
assert.ok(gv.every(Number.isFinite) && gv.some((x) => x !== 0), 'gradient finite and non-zero');
console.log('tf.grad ok: |grad| max', Math.max(...gv.map(Math.abs)).toExponential(3));

// NIfTI round trip
const dir = process.env.REGKIT_TMP;
mkdirSync(dir, { recursive: true });
const affine = [2, 0, 0, -10, 0, 2, 0, 5, 0, 0, 1, 0, 0, 0, 0, 1];
const file = join(dir, 'moved.nii.gz');
await writeNifti(file, { data: moved, affine });
const back = await readNifti(file);
assert.deepEqual(back.data.shape, moved.shape);
assert.deepEqual(back.spacing.slice(0, 2), [2, 2]);
assert.deepEqual(back.affine, affine);
const diff = tf.max(tf.abs(tf.sub(back.data, moved))).dataSync()[0];
assert.ok(diff < 1e-6, 'round trip values');
console.log('NIfTI round trip ok:', file.split('/').pop(), back.data.shape.join('x'), 'max |diff|', diff);
console.log('USER SCRIPT OK');
`;
}

/** A strictly typed user file: contracts, shapes and options across packages. */
function userTs() {
  return `import { initBackend, type Similarity, tf, warp } from '@regkit/core';
import { readNifti, type Volume, writeNifti } from '@regkit/io';
import { localNccLoss, mutualInformationLoss } from '@regkit/losses';
import { dice } from '@regkit/metrics';
import { createVoxelMorph } from '@regkit/networks';
import { registerImages } from '@regkit/register';

export async function main(path: string): Promise<number> {
  const backend: 'tensorflow' | 'wasm' | 'cpu' = await initBackend(undefined, {
    kernels: await import('@regkit/kernels'),
    wasmPaths: process.env.WASM_DIR, // undefined: found in Node
    onWarning: (message: string) => console.warn(message),
  });
  const fixed: Volume = await readNifti(path);
  const similarity: Similarity = (a: tf.Tensor, b: tf.Tensor) => localNccLoss(a, b, { window: 5 });
  const result = await registerImages(fixed.data, fixed.data, { similarity });
  const moved = warp(fixed.data, result.forward);
  await writeNifti(path.replace('.nii', '_moved.nii'), { data: moved, affine: fixed.affine });
  const net = createVoxelMorph({ ndim: 2 });
  const mi: tf.Scalar = mutualInformationLoss(fixed.data, moved);
  console.log(backend, net.ndim, mi.dataSync()[0]);
  const scores: number[] = await dice(tf.round(fixed.data), tf.round(moved));
  return scores.length;
}
`;
}

/** A browser page's module: everything browser-safe, nothing from Node. */
function browserEntry() {
  return `import * as core from '@regkit/core';
import * as io from '@regkit/io';
import * as kernels from '@regkit/kernels';
import * as losses from '@regkit/losses';
import * as networks from '@regkit/networks';
import * as register from '@regkit/register';

await core.initBackend('wasm', { kernels });
for (const [name, mod] of Object.entries({ core, io, kernels, losses, networks, register })) {
  console.log(name, Object.keys(mod).length);
}
`;
}
