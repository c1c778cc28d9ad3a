import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { networkMethods } from '@regkit/networks';
import { UsageError } from './errors.js';

/** The columns a manifest may have; `id`, `fixed` and `moving` are required. */
export const MANIFEST_COLUMNS = [
  'id',
  'fixed',
  'moving',
  'fixed_labels',
  'moving_labels',
  'method',
  'weights',
  'similarity',
] as const;

const REQUIRED_COLUMNS = ['id', 'fixed', 'moving'] as const;
/** Similarities of instance optimisation, as `register --similarity`. */
export const SIMILARITIES = ['lncc', 'mi', 'mind', 'mse'];

/** Ids name folders: letters, digits, `_`, `-` and `.`, not first a `.` or `-`, at most 128. */
const SAFE_ID = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

/**
 * One pair of a manifest. Paths are resolved against the manifest's folder; optional columns
 * left empty are absent.
 */
export interface ManifestRow {
  /** Data row index, 0-based in file order (the header and blank lines not counted): shard = row mod N. */
  row: number;
  /** Line of the manifest file, 1-based (the header is line 1). */
  line: number;
  id: string;
  fixed: string;
  moving: string;
  fixedLabels?: string;
  movingLabels?: string;
  /** A network method (`networkMethods()`), or absent / `instance` for instance optimisation. */
  method?: string;
  /** The network's folder (model.json + weights); absent: the method's bundled weights. */
  weights?: string;
  /** Similarity of instance optimisation (lncc, mi, mind, mse); absent: the batch's default. */
  similarity?: string;
}

/** Splits one CSV line (RFC 4180 quotes: `"a,b"`, `""` for a quote); unquoted fields are trimmed. */
function splitCsvLine(text: string, where: string): string[] {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    while (text[i] === ' ' || text[i] === '\t') i++;
    if (text[i] === '"') {
      let value = '';
      i++;
      for (;;) {
        if (i >= text.length) throw new UsageError(`${where}: a quoted field is not closed`);
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            value += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        value += text[i++];
      }
      while (text[i] === ' ' || text[i] === '\t') i++;
      if (i < text.length && text[i] !== ',') {
        throw new UsageError(`${where}: text after a closing quote (quote a whole field)`);
      }
      fields.push(value);
    } else {
      const end = text.indexOf(',', i);
      const raw = end < 0 ? text.slice(i) : text.slice(i, end);
      if (raw.includes('"')) {
        throw new UsageError(`${where}: a quote inside an unquoted field (quote the whole field)`);
      }
      fields.push(raw.trim());
      i = end < 0 ? text.length : end;
    }
    if (i >= text.length) return fields;
    i++; // the comma
  }
}

/**
 * Parses a batch manifest (CSV with a header; columns {@link MANIFEST_COLUMNS}, any order).
 * Relative paths are resolved against `baseDir`. Throws a {@link UsageError} naming `file`,
 * the line and the column for: a missing or unknown column, a row with another number of
 * fields than the header, an empty required field, an id that cannot name a folder, a
 * repeated id (compared without case: some file systems do not tell `A` from `a`), labels on
 * one side only, an unknown method or similarity, a similarity or weights with the wrong
 * method.
 */
export function parseManifest(text: string, file: string, baseDir: string): ManifestRow[] {
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  let headerLine = lines.findIndex((l) => l.trim() !== '');
  if (headerLine < 0) throw new UsageError(`manifest ${file} is empty (it needs a header line)`);
  const header = splitCsvLine(lines[headerLine]!, `manifest ${file} line ${headerLine + 1}`).map(
    (h) => h.toLowerCase(),
  );
  headerLine += 1;
  for (const [k, h] of header.entries()) {
    if (!(MANIFEST_COLUMNS as readonly string[]).includes(h)) {
      throw new UsageError(
        `manifest ${file} line ${headerLine}: unknown column '${h}' (column ${k + 1}); the columns are ${MANIFEST_COLUMNS.join(', ')}`,
      );
    }
    if (header.indexOf(h) !== k) {
      throw new UsageError(`manifest ${file} line ${headerLine}: column '${h}' appears twice`);
    }
  }
  for (const c of REQUIRED_COLUMNS) {
    if (!header.includes(c)) {
      throw new UsageError(
        `manifest ${file} line ${headerLine}: missing column '${c}' (the header is '${header.join(',')}'; required: ${REQUIRED_COLUMNS.join(', ')})`,
      );
    }
  }
  const methods = networkMethods();
  const rows: ManifestRow[] = [];
  const seen = new Map<string, { id: string; line: number }>();
  for (let n = headerLine; n < lines.length; n++) {
    const text = lines[n]!;
    if (text.trim() === '') continue;
    const line = n + 1;
    const where = `manifest ${file} line ${line}`;
    const fields = splitCsvLine(text, where);
    if (fields.length !== header.length) {
      throw new UsageError(
        `${where}: ${fields.length} fields, but the header has ${header.length} (${header.join(',')})`,
      );
    }
    const get = (c: string) => {
      const k = header.indexOf(c);
      return k < 0 || fields[k] === '' ? undefined : fields[k];
    };
    for (const c of REQUIRED_COLUMNS) {
      if (get(c) === undefined) throw new UsageError(`${where}: column '${c}' is empty`);
    }
    const id = get('id')!;
    if (!SAFE_ID.test(id) || /\.(csv|jsonl)$/i.test(id)) {
      throw new UsageError(
        `${where}: column 'id' '${id}' cannot name a folder (use letters, digits, '_', '-' and '.', not first '.' or '-', at most 128; not ending in .csv or .jsonl, the batch's own files)`,
      );
    }
    const key = id.toLowerCase();
    const before = seen.get(key);
    if (before) {
      throw new UsageError(
        before.id === id
          ? `${where}: column 'id' '${id}' repeats line ${before.line}`
          : `${where}: column 'id' '${id}' repeats line ${before.line}'s '${before.id}' (ids name folders, which some file systems do not tell apart by case)`,
      );
    }
    seen.set(key, { id, line });
    const path = (c: string) => {
      const p = get(c);
      return p === undefined ? undefined : isAbsolute(p) ? p : resolve(baseDir, p);
    };
    const r: ManifestRow = {
      row: rows.length,
      line,
      id,
      fixed: path('fixed')!,
      moving: path('moving')!,
    };
    const fixedLabels = path('fixed_labels');
    const movingLabels = path('moving_labels');
    if (fixedLabels && !movingLabels) {
      throw new UsageError(
        `${where}: column 'fixed_labels' needs 'moving_labels' (Dice compares the fixed labels with the moving ones warped)`,
      );
    }
    if (fixedLabels) r.fixedLabels = fixedLabels;
    if (movingLabels) r.movingLabels = movingLabels;
    const method = get('method');
    if (method !== undefined && method !== 'instance') {
      if (!methods.includes(method)) {
        throw new UsageError(
          `${where}: column 'method' '${method}' is not instance or a network method (${methods.join(', ')})`,
        );
      }
      r.method = method;
    }
    const weights = path('weights');
    if (weights) {
      if (!r.method) {
        throw new UsageError(
          `${where}: column 'weights' needs a network in column 'method' (${methods.join(', ')})`,
        );
      }
      r.weights = weights;
    }
    const similarity = get('similarity');
    if (similarity !== undefined) {
      if (!SIMILARITIES.includes(similarity)) {
        throw new UsageError(
          `${where}: column 'similarity' must be ${SIMILARITIES.join(', ')}, got '${similarity}'`,
        );
      }
      if (r.method) {
        throw new UsageError(
          `${where}: column 'similarity' applies to instance optimisation, not to method ${r.method}`,
        );
      }
      r.similarity = similarity;
    }
    rows.push(r);
  }
  return rows;
}

/** Reads and parses a manifest file ({@link parseManifest}; paths relative to its folder). */
export async function readManifest(file: string): Promise<ManifestRow[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new UsageError(`--manifest ${file} cannot be read (${(e as Error).message})`);
  }
  return parseManifest(text, file, dirname(resolve(file)));
}

/** Which shard this process runs: rows r with r mod `count` = `index`. */
export interface Shard {
  index: number;
  count: number;
  /** Where the index came from: `--shard`, an environment variable, or `default`. */
  source: string;
}

/** Environment variables that give the shard index, in the order they are read. */
export const SHARD_INDEX_VARIABLES = [
  'REGKIT_SHARD_INDEX',
  'SLURM_ARRAY_TASK_ID',
  'JOB_COMPLETION_INDEX',
  'AWS_BATCH_JOB_ARRAY_INDEX',
] as const;

function wholeNumber(value: string | undefined, what: string): number | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  if (!/^\d+$/.test(value.trim())) {
    throw new UsageError(`${what} must be a whole number ≥ 0, got '${value}'`);
  }
  return Number(value);
}

/**
 * The shard of this process. `--shard I/N` wins; else the index comes from the first set of
 * {@link SHARD_INDEX_VARIABLES} (Slurm's `SLURM_ARRAY_TASK_ID` counted from
 * `SLURM_ARRAY_TASK_MIN` in steps of `SLURM_ARRAY_TASK_STEP`) and the count from `--shards`
 * or `SLURM_ARRAY_TASK_COUNT`; with neither, one shard holds every row. Throws a
 * {@link UsageError} for a malformed `--shard`, an index outside [0, N), a count without an
 * index (N > 1) or an index without a count, and a `--shards` that disagrees with Slurm's.
 */
export function resolveShard(
  shard: string | undefined,
  shards: number | undefined,
  env: Record<string, string | undefined> = process.env,
): Shard {
  if (shards !== undefined && (!Number.isInteger(shards) || shards < 1)) {
    throw new UsageError(`--shards must be a whole number ≥ 1, got '${shards}'`);
  }
  if (shard !== undefined) {
    const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(shard);
    const index = m ? Number(m[1]) : Number.NaN;
    const count = m ? Number(m[2]) : Number.NaN;
    if (!m || count < 1 || index >= count) {
      throw new UsageError(
        `--shard must be I/N with N ≥ 1 and 0 ≤ I < N (e.g. 0/4 … 3/4), got '${shard}'`,
      );
    }
    if (shards !== undefined && shards !== count) {
      throw new UsageError(`--shard ${shard} and --shards ${shards} disagree`);
    }
    return { index, count, source: '--shard' };
  }
  let index: number | undefined;
  let source = 'default';
  for (const name of SHARD_INDEX_VARIABLES) {
    const v = wholeNumber(env[name], name);
    if (v === undefined) continue;
    index = v;
    source = name;
    if (name === 'SLURM_ARRAY_TASK_ID') {
      const min = wholeNumber(env.SLURM_ARRAY_TASK_MIN, 'SLURM_ARRAY_TASK_MIN') ?? 0;
      const step = wholeNumber(env.SLURM_ARRAY_TASK_STEP, 'SLURM_ARRAY_TASK_STEP') || 1;
      if ((v - min) % step !== 0 || v < min) {
        throw new UsageError(
          `SLURM_ARRAY_TASK_ID=${v} is not SLURM_ARRAY_TASK_MIN=${min} plus a multiple of SLURM_ARRAY_TASK_STEP=${step}: use a contiguous array (--array=0-N) or pass --shard I/N`,
        );
      }
      index = (v - min) / step;
    }
    break;
  }
  let count = shards;
  const slurmCount = wholeNumber(env.SLURM_ARRAY_TASK_COUNT, 'SLURM_ARRAY_TASK_COUNT');
  if (source === 'SLURM_ARRAY_TASK_ID' && slurmCount !== undefined) {
    if (count !== undefined && count !== slurmCount) {
      throw new UsageError(
        `--shards ${count} disagrees with SLURM_ARRAY_TASK_COUNT=${slurmCount} (the array has ${slurmCount} tasks)`,
      );
    }
    count = slurmCount;
  }
  if (index === undefined) {
    if (count !== undefined && count > 1) {
      throw new UsageError(
        `--shards ${count} needs this process's shard index: set one of ${SHARD_INDEX_VARIABLES.join(', ')} or pass --shard I/${count}`,
      );
    }
    return { index: 0, count: 1, source };
  }
  if (count === undefined) {
    throw new UsageError(
      `${source}=${env[source]} gives the shard index but nothing gives the number of shards: pass --shards N`,
    );
  }
  if (index >= count) {
    throw new UsageError(
      `the shard index from ${source} (${index}) must be below the number of shards (${count})`,
    );
  }
  return { index, count, source };
}
