#!/usr/bin/env node
// Builds BENCHMARKS.md from JSON-lines benchmark outputs (regkit JS benches and
// packages/core/bench/pytorch_bench.py). No dependencies; Node >= 20.
//
// Usage: node scripts/benchmarks-md.mjs [--out BENCHMARKS.md] file.jsonl [...]
//
// Each input line that parses to a JSON object is either
//   {"command": "..."}                       how the file was produced, or
//   {"suite","impl","backend","threads","op","size","ms","runs","peak_rss_mb", ...}
// a measurement. "impl":"pytorch" (or "scipy") lines are the reference side; any other impl
// (normally "regkit") gives a table row per backend. Extra keys ("note", ...)
// end up in a notes column. Other lines are ignored. Later duplicates of the
// same (suite, impl, backend, threads, op, size) replace earlier ones.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const USAGE = 'usage: node scripts/benchmarks-md.mjs [--out BENCHMARKS.md] <file.jsonl> [...]';
const STANDARD_KEYS = new Set([
  'suite',
  'impl',
  'backend',
  'threads',
  'op',
  'size',
  'ms',
  'runs',
  'peak_rss_mb',
  'command',
]);
/** A sentence under a suite's heading, where its rows need one to be read right. */
const SUITE_NOTES = {
  core:
    "These rows time `@regkit/core` alone: its plain-JavaScript kernels (and, as 'portable ops', the composites of stock tfjs ops), " +
    'without `@regkit/kernels`. With the WebAssembly kernels installed (what `initBackend` loads, and every user of the CLI gets) ' +
    'the same ops are in the kernels suite below (warp, Jacobian determinant: at 1 and 2 threads).',
};

const DASH = '—';

function parseArgs(argv) {
  let out = 'BENCHMARKS.md';
  const files = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out' || a === '-o') {
      if (i + 1 >= argv.length) fail(`${a} needs a path\n${USAGE}`, 2);
      out = argv[++i];
    } else if (a.startsWith('--out=')) {
      out = a.slice('--out='.length);
    } else if (a === '--help' || a === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else if (a === '--') {
      files.push(...argv.slice(i + 1));
      break;
    } else if (a.startsWith('-') && a !== '-') {
      fail(`unknown option ${a}\n${USAGE}`, 2);
    } else {
      files.push(a);
    }
  }
  if (files.length === 0) fail(`no input files\n${USAGE}`, 2);
  if (!out) fail(`empty --out path\n${USAGE}`, 2);
  return { out, files };
}

function fail(msg, code = 1) {
  process.stderr.write(`benchmarks-md: ${msg}\n`);
  process.exit(code);
}

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function isPytorch(rec) {
  return /^((py)?torch|scipy|elastix)/i.test(String(rec.impl ?? ''));
}

function num(v) {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  return Number.isFinite(n) ? n : null;
}

function fmtMs(v) {
  const n = num(v);
  if (n === null) return DASH;
  if (Math.abs(n) >= 100) return n.toFixed(1);
  if (Math.abs(n) >= 1) return n.toFixed(2);
  return n.toFixed(3);
}

function fmtMb(v) {
  const n = num(v);
  return n === null ? DASH : n.toFixed(1);
}

function fmtRatio(a, b) {
  const x = num(a);
  const y = num(b);
  if (x === null || y === null || y <= 0) return DASH;
  return (x / y).toFixed(2);
}

function cell(s) {
  return String(s).replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/\r?\n/g, ' ').trim();
}

function extras(rec) {
  const parts = [];
  for (const [k, v] of Object.entries(rec)) {
    if (STANDARD_KEYS.has(k) || v === undefined || v === null || v === '') continue;
    const val = typeof v === 'string' ? v : JSON.stringify(v);
    parts.push(k === 'note' ? val : `${k}=${val}`);
  }
  return parts.join('; ');
}

function readInputs(files) {
  const commands = []; // {file, command}
  const records = new Map(); // key -> rec (insertion order = first appearance)
  let ignored = 0;
  for (const file of files) {
    let text;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      fail(`cannot read ${file}: ${e.message}`);
    }
    let fileCommands = 0;
    for (const line of text.split(/\r?\n/)) {
      const t = line.trim();
      if (!t.startsWith('{')) {
        if (t) ignored++;
        continue;
      }
      let rec;
      try {
        rec = JSON.parse(t);
      } catch {
        ignored++;
        continue;
      }
      if (!isObject(rec)) {
        ignored++;
        continue;
      }
      if (typeof rec.command === 'string' && rec.op === undefined) {
        fileCommands++;
        if (!commands.some((c) => c.command === rec.command && c.file === file)) {
          commands.push({ file, command: rec.command });
        }
        continue;
      }
      if (rec.op === undefined || rec.size === undefined) {
        ignored++;
        continue;
      }
      rec.suite = String(rec.suite ?? 'default');
      rec.op = String(rec.op);
      rec.size = String(rec.size);
      rec.impl = String(rec.impl ?? 'regkit');
      rec.backend = String(rec.backend ?? '');
      const key = [rec.suite, rec.impl, rec.backend, rec.threads ?? '', rec.op, rec.size].join(
        '\u0000',
      );
      if (records.has(key)) records.delete(key); // later wins, keeps its own position
      records.set(key, rec);
    }
    if (fileCommands === 0) commands.push({ file, command: null });
  }
  return { commands, records: [...records.values()], ignored };
}

function pickReference(candidates, threads) {
  if (candidates.length === 0) return null;
  if (threads !== undefined && threads !== null) {
    const same = candidates.find((r) => String(r.threads) === String(threads));
    if (same) return same;
  }
  return candidates.find((r) => Number(r.threads) === 1) ?? candidates[0];
}

function buildSuiteTable(recs) {
  const ops = [];
  const sizes = [];
  for (const r of recs) {
    if (!ops.includes(r.op)) ops.push(r.op);
    if (!sizes.includes(r.size)) sizes.push(r.size);
  }
  const rows = [];
  for (const op of ops) {
    for (const size of sizes) {
      const here = recs.filter((r) => r.op === op && r.size === size);
      if (here.length === 0) continue;
      const refs = here.filter(isPytorch);
      const mine = here.filter((r) => !isPytorch(r));
      if (mine.length === 0) {
        const ref = pickReference(refs);
        rows.push({ op, size, mine: null, ref });
        continue;
      }
      for (const m of mine) rows.push({ op, size, mine: m, ref: pickReference(refs, m.threads) });
    }
  }

  const body = rows.map(({ op, size, mine, ref }) => {
    const backend = mine
      ? mine.impl === 'regkit'
        ? mine.backend || DASH
        : `${mine.impl}${mine.backend ? `/${mine.backend}` : ''}`
      : DASH;
    const notes = [];
    if (mine) {
      if (mine.threads !== undefined && Number(mine.threads) !== 1) {
        notes.push(`threads=${mine.threads}`);
      }
      const e = extras(mine);
      if (e) notes.push(e);
    }
    if (ref) {
      const e = extras(ref);
      if (e) notes.push(`reference: ${e}`);
      if (ref.threads !== undefined && Number(ref.threads) !== 1) {
        notes.push(`reference threads=${ref.threads}`);
      }
    }
    return {
      cells: [
        `\`${op}\``,
        size,
        backend,
        fmtMs(mine?.ms),
        fmtMb(mine?.peak_rss_mb),
        fmtMs(ref?.ms),
        fmtMb(ref?.peak_rss_mb),
        fmtRatio(mine?.ms, ref?.ms),
      ],
      notes: notes.join('; '),
    };
  });

  const withNotes = body.some((r) => r.notes);
  const header = [
    'op',
    'size',
    'regkit backend',
    'regkit ms',
    'regkit peak RSS MB',
    'reference ms',
    'reference peak RSS MB',
    'ratio regkit/reference',
  ];
  if (withNotes) header.push('notes');
  const align = ['---', '---', '---', '---:', '---:', '---:', '---:', '---:'];
  if (withNotes) align.push('---');
  const lines = [`| ${header.join(' | ')} |`, `| ${align.join(' | ')} |`];
  for (const r of body) {
    const cells = withNotes ? [...r.cells, r.notes || ''] : r.cells;
    lines.push(`| ${cells.map(cell).join(' | ')} |`);
  }
  return lines.join('\n');
}

function render({ commands, records, ignored }) {
  const cpus = os.cpus();
  const model = cpus[0]?.model?.trim() || 'unknown CPU';
  const out = [];
  out.push(
    '<!-- Generated by scripts/benchmarks-md.mjs. Do not edit by hand; re-run the script. -->',
  );
  out.push('');
  out.push('# Benchmarks');
  out.push('');
  out.push(
    '_Generated by `scripts/benchmarks-md.mjs` from JSON-lines benchmark output. Do not edit by hand._',
  );
  out.push('');
  out.push('## Machine');
  out.push('');
  out.push(`- CPU: ${model}`);
  out.push(
    `- Cores: ${cpus.length} (available parallelism ${os.availableParallelism?.() ?? cpus.length})`,
  );
  out.push(`- Memory: ${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB`);
  out.push(`- OS: ${os.type()} ${os.release()} (${os.platform()}/${os.arch()})`);
  out.push(`- Node: ${process.version}`);
  out.push(`- Date: ${new Date().toISOString()}`);
  out.push('');
  out.push('## Commands');
  out.push('');
  out.push('The tables below were produced from these inputs:');
  out.push('');
  for (const file of [...new Set(commands.map((c) => c.file))]) {
    const cmds = commands.filter((c) => c.file === file && c.command);
    out.push(`- \`${path.basename(file)}\``);
    if (cmds.length === 0) {
      out.push('  (no command recorded)');
      continue;
    }
    out.push('');
    out.push('  ```sh');
    for (const c of cmds) out.push(`  ${c.command.replace(/\r?\n/g, ' ')}`);
    out.push('  ```');
  }
  out.push('');
  out.push(
    'Times are medians in milliseconds per call (float32, batch 1); peak RSS is the ' +
      "process's maximum resident set size in MB (includes the runtime's baseline). " +
      `Ratio > 1 means regkit is slower. ${DASH} = no measurement.`,
  );
  out.push('');

  const suites = [];
  for (const r of records) if (!suites.includes(r.suite)) suites.push(r.suite);
  if (suites.length === 0) {
    out.push('_No measurements found in the inputs._');
    out.push('');
  }
  for (const suite of suites) {
    const recs = records.filter((r) => r.suite === suite);
    out.push(`## Suite: ${suite}`);
    out.push('');
    if (SUITE_NOTES[suite]) {
      out.push(SUITE_NOTES[suite]);
      out.push('');
    }
    const refs = recs.filter(isPytorch);
    if (refs.length > 0) {
      const backends = [...new Set(refs.map((r) => r.backend || DASH))].join(', ');
      const threads = [...new Set(refs.map((r) => r.threads).filter((t) => t !== undefined))];
      out.push(
        `Reference (PyTorch, SciPy or elastix): ${backends}${threads.length ? `, threads ${threads.join(', ')}` : ''}.`,
      );
      out.push('');
    }
    out.push(buildSuiteTable(recs));
    out.push('');
  }
  if (ignored > 0) {
    out.push(`<!-- ${ignored} input line(s) were not measurements and were ignored. -->`);
    out.push('');
  }
  return out.join('\n');
}

function writeAtomic(file, text) {
  const abs = path.resolve(file);
  const dir = path.dirname(abs);
  fs.mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(abs)}.${process.pid}.${Date.now()}.tmp`);
  try {
    fs.writeFileSync(tmp, text, 'utf8');
    fs.renameSync(tmp, abs);
  } catch (e) {
    try {
      fs.rmSync(tmp, { force: true });
    } catch {}
    fail(`cannot write ${abs}: ${e.message}`);
  }
  return abs;
}

const { out, files } = parseArgs(process.argv.slice(2));
const data = readInputs(files);
const written = writeAtomic(out, render(data));
process.stderr.write(
  `benchmarks-md: wrote ${written} (${data.records.length} measurement(s) from ${files.length} file(s))\n`,
);
