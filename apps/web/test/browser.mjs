#!/usr/bin/env node
/**
 * `pnpm test:browser`: builds the web app (vite build), serves it (vite preview, with the
 * cross-origin isolation headers, on 127.0.0.1), and drives Debian's Chromium headless with
 * playwright-core (it downloads nothing): loads the demo pair, registers it, and checks
 *
 *  - the run ends with a result and no page error;
 *  - the backend that ran is wasm with regkit's kernels (not a silent fallback to cpu), with
 *    no warning from initBackend;
 *  - the progress bar moved (progress messages, increasing) and the page stayed responsive
 *    (while the worker registered, a 50 ms timer on the main thread never waited 1 s);
 *  - mean Dice after > mean Dice before + 0.05;
 *  - the field the user downloads reads back with @regkit/io on the fixed grid and is closer
 *    to the known deformation than the identity is; the warped image reads back too;
 *  - the user's path: two PNG files with PNG label maps (a disc and the disc shifted by 5
 *    pixels), local NCC: the result has the PNG's size and Dice improves;
 *  - with the .wasm files looked for in the wrong folder (`?wasmPaths=missing/`), the worker
 *    runs on cpu and initBackend's console warning names the URL that answered 404.
 *
 *   pnpm test:browser                      (from the repository root)
 *   CHROMIUM=/path/to/chrome pnpm test:browser
 *   REGKIT_SCREENSHOT=/tmp/app.png pnpm test:browser   (keeps a screenshot of the result)
 *
 * Needs `chromium` (`apt-get install -y chromium`); no network. Prints `N passed, N failed`.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, randomSmoothField, tf, warp } from '@regkit/core';
import { encodePng, readDisplacementField, readNifti } from '@regkit/io';
import { chromium } from 'playwright-core';
import { build, preview } from 'vite';

const APP = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DATA = resolve(APP, '../../packages/cli/data');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const TIMEOUT_MS = 170_000;
const t0 = performance.now();
const secs = () => ((performance.now() - t0) / 1000).toFixed(1);

const results = [];
function check(name, ok, detail = '') {
  results.push({ name, ok });
  console.log(`${ok ? '✓' : '✗'} ${name}${detail ? ` — ${detail}` : ''}`);
}

if (!existsSync(CHROMIUM)) {
  console.error(
    `test:browser: no Chromium at ${CHROMIUM}: install Debian's (apt-get install -y chromium) or set CHROMIUM`,
  );
  process.exit(1);
}

console.log(`[${secs()} s] vite build`);
await build({ root: APP, logLevel: 'warn', configFile: join(APP, 'vite.config.ts') });
const server = await preview({
  root: APP,
  configFile: join(APP, 'vite.config.ts'),
  logLevel: 'warn',
  preview: { host: '127.0.0.1', port: 0, strictPort: false, open: false },
});
const { port } = server.httpServer.address();
const url = `http://127.0.0.1:${port}/`;
console.log(`[${secs()} s] serving ${url}`);

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // root in CI: no sandbox; SwiftShader gives WebGL2 (niivue) without a GPU
  args: ['--no-sandbox', '--enable-unsafe-swiftshader', '--use-angle=swiftshader'],
});
let exitCode = 1;
try {
  const context = await browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  const pageErrors = [];
  const consoleLines = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('worker', (w) =>
    w.on('console', (m) => consoleLines.push(`worker ${m.type()}: ${m.text()}`)),
  );
  await page.goto(url);
  check(
    'the page is cross-origin isolated (COOP/COEP from the Vite config)',
    await page.evaluate(() => self.crossOriginIsolated),
  );

  // main-thread responsiveness while the worker registers
  await page.evaluate(() => {
    const w = window;
    w.__gaps = { last: performance.now(), max: 0 };
    setInterval(() => {
      const now = performance.now();
      // while the worker registers (not while niivue starts WebGL on the result)
      if (document.body.dataset.state === 'running')
        w.__gaps.max = Math.max(w.__gaps.max, now - w.__gaps.last);
      w.__gaps.last = now;
    }, 50);
  });
  console.log(`[${secs()} s] click "Load the demo pair and register"`);
  await page.click('#demo');
  await page.waitForSelector('body[data-state="done"], body[data-state="error"]', {
    timeout: TIMEOUT_MS,
  });
  const state = await page.evaluate(() => window.regkit);
  const maxGapMs = await page.evaluate(() => window.__gaps.max);
  console.log(`[${secs()} s] page state ${state.state}`);
  check('the registration finished', state.state === 'done', state.error ?? '');
  check('no uncaught page error', pageErrors.length === 0, pageErrors.join('; '));
  const b = state.backend ?? {};
  check(
    'backend: wasm with the @regkit/kernels kernels',
    b.name === 'wasm' && b.kernels === true,
    `backend ${b.name}, kernels ${b.kernels}, kernel threads ${b.kernelThreads}, isolated ${b.crossOriginIsolated}`,
  );
  // the page is served cross-origin isolated: the kernels must use worker threads when the
  // browser reports more than one core
  check(
    'the kernels run on worker threads (cross-origin isolated page)',
    b.crossOriginIsolated === true && (b.cores < 2 || b.kernelThreads >= 2),
    `kernel threads ${b.kernelThreads} of ${b.cores} cores; reason ${b.kernelThreadsReason}`,
  );
  check(
    'initBackend warned of nothing',
    (b.warnings ?? []).length === 0,
    (b.warnings ?? []).join('; '),
  );
  const prog = state.progress ?? [];
  const increasing = prog.every((p, i) => i === 0 || p.done >= prog[i - 1].done);
  check(
    'the progress bar moved',
    prog.length >= 5 && increasing && prog.at(-1).done === prog.at(-1).total,
    `${prog.length} progress messages, last ${prog.at(-1)?.done}/${prog.at(-1)?.total}`,
  );
  check(
    'the page stayed responsive while registering',
    maxGapMs < 1000,
    `longest wait of a 50 ms main-thread timer ${maxGapMs.toFixed(0)} ms`,
  );
  const r = state.result;
  if (r) {
    console.log(
      `  ${r.shape.join('×')}, ${r.similarity}, ${r.seconds.toFixed(1)} s in the worker; Dice ${r.diceBefore?.toFixed(3)} → ${r.diceAfter?.toFixed(3)}; folding ${r.foldingPercent.toFixed(3)} %`,
    );
    check('Dice improves', r.diceAfter > r.diceBefore + 0.05, `${r.diceBefore} → ${r.diceAfter}`);
    const summary = await page.textContent('#summary');
    check(
      'the page shows Dice',
      /Mean Dice \d\.\d{3} → \d\.\d{3}/.test(summary ?? ''),
      summary ?? '',
    );

    // the downloads, as a user gets them
    const download = async (selector) => {
      const [d] = await Promise.all([page.waitForEvent('download'), page.click(selector)]);
      return new Uint8Array(readFileSync(await d.path()));
    };
    const fieldBytes = await download('#download-field');
    const warpedBytes = await download('#download-warped');
    // the figure, as `regkit register --png` draws it: a PNG at least 512 px wide
    const figureBytes = await download('#download-figure');
    const ihdr = new DataView(figureBytes.buffer, figureBytes.byteOffset + 16, 8);
    check(
      'the downloaded figure is a PNG ≥ 512 px wide, the size the page shows',
      figureBytes[1] === 0x50 &&
        ihdr.getUint32(0) >= 512 &&
        ihdr.getUint32(0) === r.figure.width &&
        ihdr.getUint32(4) === r.figure.height &&
        figureBytes.length === r.figure.pngBytes,
      `${ihdr.getUint32(0)}×${ihdr.getUint32(4)} px, ${figureBytes.length} bytes`,
    );
    await initBackend('cpu');
    const pd = await readNifti(join(DATA, 'itk_brainweb_pd_slice.nii.gz'));
    const spatial = pd.data.shape.slice(1, -1);
    const field = await readDisplacementField(fieldBytes, pd, { name: 'field.nii.gz' });
    const warped = await readNifti(warpedBytes, { name: 'warped.nii.gz' });
    check(
      'the downloaded field and warped image read back with @regkit/io on the fixed grid',
      tf.util.arraysEqual(field.shape, [1, ...spatial, 2]) &&
        tf.util.arraysEqual(warped.data.shape, pd.data.shape),
      `field ${field.shape.join('×')}, warped ${warped.data.shape.join('×')}`,
    );
    // the demo's known answer (worker.ts: seed 7, up to 6 voxels, control spacing 32)
    const truth = randomSmoothField(spatial, { maxDisplacement: 6, controlSpacing: 32, seed: 7 });
    const [before, after] = tf.tidy(() => {
      const fixed = warp(pd.data, truth);
      const mask = tf.cast(tf.greater(fixed, tf.mul(tf.max(fixed), 0.1)), 'float32');
      const n = tf.sum(mask);
      const mean = (u) => tf.div(tf.sum(tf.mul(tf.norm(u, 'euclidean', -1, true), mask)), n);
      return [mean(truth), mean(tf.sub(field, truth))];
    });
    const eb = before.dataSync()[0];
    const ea = after.dataSync()[0];
    check(
      'the downloaded field recovers the known deformation',
      ea < 0.6 * eb,
      `mean |u − u_true| ${ea.toFixed(2)} voxels against ${eb.toFixed(2)} for the identity (head)`,
    );
  }
  const niivueNote = await page.textContent('#niivue-status');
  console.log(`  niivue: ${niivueNote || 'overlay shown'}`);
  if (process.env.REGKIT_SCREENSHOT) {
    await page.waitForTimeout(500);
    await page.screenshot({ path: process.env.REGKIT_SCREENSHOT, fullPage: true });
    console.log(`  screenshot: ${process.env.REGKIT_SCREENSHOT}`);
  }

  // the user's own files: two PNG images of a disc, the moving one shifted by 5 pixels
  // along x, with PNG label maps; local NCC
  const dir = mkdtempSync(join(tmpdir(), 'regkit-web-'));
  const disc = (cx, cy, value, background) => {
    const [w, h] = [64, 56];
    const data = new Uint8Array(w * h * 4);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const inside = (x - cx) ** 2 + ((y - cy) * 1.3) ** 2 < 15 ** 2;
        const v = inside ? value : background;
        data.set([v, v, v, 255], (y * w + x) * 4);
      }
    }
    return encodePng({ width: w, height: h, data });
  };
  const files = {
    fixed: disc(32, 28, 200, 20),
    moving: disc(37, 28, 200, 20),
    'fixed-labels': disc(32, 28, 1, 0),
    'moving-labels': disc(37, 28, 1, 0),
  };
  for (const [id, bytes] of Object.entries(files)) {
    const path = join(dir, `${id}.png`);
    writeFileSync(path, bytes);
    await page.setInputFiles(`#${id}`, path);
  }
  await page.selectOption('#similarity', 'lncc');
  await page.click('#register');
  await page.waitForSelector('body[data-state="done"], body[data-state="error"]', {
    timeout: TIMEOUT_MS,
  });
  const own = await page.evaluate(() => window.regkit);
  rmSync(dir, { recursive: true, force: true });
  const o = own.result;
  check(
    'two PNG files and their label maps (the user path): registered, Dice up',
    own.state === 'done' &&
      tf.util.arraysEqual(o?.shape ?? [], [64, 56]) &&
      o.similarity === 'lncc' &&
      o.diceAfter > o.diceBefore + 0.05,
    o
      ? `${o.shape.join('×')}, Dice ${o.diceBefore?.toFixed(3)} → ${o.diceAfter?.toFixed(3)}, ${o.seconds.toFixed(1)} s`
      : `state ${own.state}: ${own.error}`,
  );
  await page.close();

  // a page whose .wasm files are not where it says: cpu, and a warning naming the 404'd URL
  const broken = await context.newPage();
  const warnings = [];
  broken.on('worker', (w) =>
    w.on('console', (m) => m.type() === 'warning' && warnings.push(m.text())),
  );
  await broken.goto(`${url}?wasmPaths=missing/`);
  await broken.click('#demo');
  await broken.waitForFunction(() => window.regkit.backend !== undefined, null, {
    timeout: 60_000,
  });
  const fb = await broken.evaluate(() => window.regkit.backend);
  const want = `GET ${url}missing/tfjs-backend-wasm-simd.wasm answered 404 Not Found`;
  check(
    'wrong wasmPaths: cpu, and a console warning naming the URL that answered 404',
    fb.name === 'cpu' &&
      fb.warnings.length === 1 &&
      fb.warnings[0].includes(want) &&
      warnings.some((w) => w.includes(want)) &&
      (await broken.textContent('#warnings')).includes(want),
    fb.warnings[0] ?? `backend ${fb.name}, no warning`,
  );
  await broken.close();
  if (results.some((x) => !x.ok)) {
    console.log('page console:');
    for (const l of consoleLines.slice(-40)) console.log(`  ${l}`);
  }
  exitCode = results.every((x) => x.ok) ? 0 : 1;
} finally {
  await browser.close();
  await new Promise((res) => server.httpServer.close(res));
  const failed = results.filter((x) => !x.ok).length;
  console.log(`test:browser (${secs()} s)`);
  console.log(`${results.length - failed} passed, ${failed} failed`);
}
process.exit(exitCode);
