// Runs every TypeScript/JavaScript snippet of a package README as a vitest test, verbatim.
//
// A package's test/readme.test.ts is one call:
//
//   import { tf } from '@regkit/core';
//   import { readmeSnippetTests } from '../../../scripts/readme-snippets.mjs';
//   readmeSnippetTests(new URL('../README.md', import.meta.url), { tf });
//
// Every fenced block tagged ts/typescript/js/javascript/mjs is written, unchanged, to
// <package>/test/.readme-snippets/<n>.<ext> (gitignored) and becomes one `it(...)` that imports
// it, so vitest compiles it like the package's tests and resolves its imports the same way (the
// package's own name through its vitest alias to dist, other @regkit packages through
// node_modules). A snippet fails its test when it does not compile or throws (top-level await
// included). Blocks with another tag (sh, text, ...) are not run, nor a block preceded by
// `<!-- no-run: reason -->` (the reason is required and shows as a skipped test): use that only
// where running is impossible, e.g. a snippet that needs @tensorflow/tfjs-node.

import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

const RUNNABLE = { ts: 'ts', typescript: 'ts', js: 'mjs', javascript: 'mjs', mjs: 'mjs' };
const NO_RUN = /^<!--\s*no-run:\s*(.*?)\s*-->$/;

/**
 * The fenced code blocks of a Markdown text, in order.
 * @param {string} markdown
 * @returns {import('./readme-snippets.d.mts').ReadmeSnippet[]}
 */
export function extractSnippets(markdown) {
  const lines = markdown.split(/\r?\n/);
  /** @type {import('./readme-snippets.d.mts').ReadmeSnippet[]} */
  const snippets = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^( {0,3})(`{3,}|~{3,})\s*([^\s`]*)/.exec(lines[i]);
    if (!open) continue;
    const [, indent, fence, info] = open;
    const lang = info.toLowerCase();
    let previous = i - 1;
    while (previous >= 0 && lines[previous].trim() === '') previous--;
    const noRun = previous >= 0 ? NO_RUN.exec(lines[previous].trim()) : null;
    const body = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const line = lines[j];
      const trimmed = line.trimStart();
      if (
        trimmed.startsWith(fence[0].repeat(fence.length)) &&
        trimmed.trim().replaceAll(fence[0], '') === ''
      )
        break;
      body.push(indent && line.startsWith(indent) ? line.slice(indent.length) : line);
    }
    snippets.push({
      lang,
      line: i + 1,
      code: `${body.join('\n')}\n`,
      runnable: lang in RUNNABLE,
      ...(noRun ? { noRun: noRun[1] || '' } : {}),
    });
    i = j;
  }
  return snippets;
}

/** Tensors allocated now (0 before any backend is initialised: memory() then throws). */
function numTensors(tf) {
  try {
    return tf ? tf.memory().numTensors : 0;
  } catch {
    return 0;
  }
}

/**
 * Registers one vitest test per runnable snippet of a README (see the top of this file).
 * @param {URL | string} readmeUrl file URL (or path) of the README
 * @param {import('./readme-snippets.d.mts').ReadmeSnippetOptions} [options]
 */
export function readmeSnippetTests(readmeUrl, options = {}) {
  const readme =
    readmeUrl instanceof URL || String(readmeUrl).startsWith('file:')
      ? fileURLToPath(readmeUrl)
      : path.resolve(String(readmeUrl));
  const dir = path.resolve(path.dirname(readme), options.dir ?? 'test/.readme-snippets');
  const timeout = options.timeout ?? 300_000;
  const maxNewTensors = options.maxNewTensors ?? 2000;
  const snippets = extractSnippets(readFileSync(readme, 'utf8'));
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });

  const tsconfig = options.tsconfig ?? path.join(path.dirname(readme), 'tsconfig.json');
  const typecheck = options.typecheck ?? existsSync(tsconfig);
  /** @type {string[]} */
  const tsFiles = [];

  describe(`${path.basename(path.dirname(readme))}/${path.basename(readme)} snippets`, () => {
    let n = 0;
    for (const snippet of snippets) {
      if (!snippet.runnable) continue;
      n++;
      const name = `snippet ${n} (line ${snippet.line})`;
      const file = path.join(dir, `${n}.${RUNNABLE[snippet.lang]}`);
      writeFileSync(file, `// ${readme}:${snippet.line} (generated; do not edit)\n${snippet.code}`);
      if (file.endsWith('.ts')) tsFiles.push(path.basename(file));
      if (snippet.noRun !== undefined) {
        if (!snippet.noRun)
          throw new Error(`${readme}:${snippet.line}: <!-- no-run: --> needs a reason`);
        it.skip(`${name}: not run: ${snippet.noRun}`, () => {});
        continue;
      }
      it(
        name,
        async () => {
          const before = numTensors(options.tf);
          await import(/* @vite-ignore */ pathToFileURL(file).href);
          if (options.tf) {
            const added = numTensors(options.tf) - before;
            expect(added, `${name} left ${added} tensors`).toBeLessThanOrEqual(maxNewTensors);
          }
        },
        timeout,
      );
    }
    if (n === 0) it('has runnable snippets', () => expect.fail(`no ts/js snippets in ${readme}`));
    if (typecheck && tsFiles.length > 0) {
      it('TypeScript snippets type-check (tsc)', () => typeCheck(dir, tsconfig, tsFiles), timeout);
    }
  });
}

/**
 * Runs tsc on the snippet files with the package's compiler options, except
 * `noUncheckedIndexedAccess` (a user's plain `strict` project is the target).
 * @param {string} dir
 * @param {string} tsconfig
 * @param {string[]} files
 */
async function typeCheck(dir, tsconfig, files) {
  const config = path.join(dir, 'tsconfig.json');
  writeFileSync(
    config,
    JSON.stringify(
      {
        extends: path.relative(dir, tsconfig).split(path.sep).join('/'),
        compilerOptions: { noEmit: true, noUncheckedIndexedAccess: false, paths: {} },
        include: [],
        files,
      },
      null,
      2,
    ),
  );
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const output = await new Promise((resolve) => {
    execFile(process.execPath, [tsc, '-p', config, '--pretty', 'false'], (error, stdout, stderr) =>
      resolve(error ? `${stdout}${stderr}` || String(error) : ''),
    );
  });
  expect(output, 'tsc errors in README snippets').toBe('');
}
