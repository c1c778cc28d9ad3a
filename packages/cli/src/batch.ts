import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { RegkitError, tf } from '@regkit/core';
import type { RegistrationNetwork } from '@regkit/networks';
import { bundledWeights, loadRegistrationNetwork, networkMethods } from '@regkit/networks';
import { UsageError } from './errors.js';
import { assertLabelMap, labelOverlap, presentLabels } from './evaluate.js';
import { disposeVolumes, OutputTransaction, readInput, removeStaleTemporaries } from './files.js';
import { sameGrid, warpThroughAffines } from './geometry.js';
import type { Progress } from './progress.js';
import { type RegisterCommandOptions, registerCommand, registerPlan } from './register.js';

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
const SIMILARITIES = ['lncc', 'mi', 'mind', 'mse'];

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

/** The instance-optimisation options a batch applies to every instance row (as `register`'s flags). */
export type BatchInstanceOptions = Pick<
  RegisterCommandOptions,
  | 'similarity'
  | 'transform'
  | 'affine'
  | 'affineIterations'
  | 'levels'
  | 'iterations'
  | 'learningRate'
  | 'regularisation'
  | 'skipFinest'
  | 'maxVoxels'
  | 'seed'
>;

const INSTANCE_KEYS = [
  'transform',
  'affine',
  'affineIterations',
  'levels',
  'iterations',
  'learningRate',
  'regularisation',
  'skipFinest',
  'maxVoxels',
  'seed',
] as const;

/** Options of {@link runBatch}. */
export interface BatchOptions extends BatchInstanceOptions {
  /** The manifest CSV ({@link parseManifest}). */
  manifest: string;
  /** Where each row's folder `<id>/` goes (created when missing). */
  outDir: string;
  /** `I/N`: run rows r with r mod N = I ({@link resolveShard}). */
  shard?: string;
  /** The number of shards N, the index coming from the environment. */
  shards?: number;
  /** Environment read for the shard (default `process.env`). */
  env?: Record<string, string | undefined>;
  /** One line per row ({@link createLineProgress}). */
  progress?: Progress;
  /** Called after each row of this shard, done, skipped or failed. */
  onRow?: (report: BatchRowReport) => void;
}

/** A row's input file and its SHA-256 (hex). */
export interface HashedInput {
  path: string;
  sha256: string;
}

/** The Dice (and HD95, mm) of a row with labels: fixed labels against the moving ones before and the warped ones after. */
export interface RowOverlap {
  /** Non-zero labels of the fixed or the moving label map, ascending. */
  labels: number[];
  diceBefore: number[];
  diceAfter: number[];
  /** Means over the labels (NaN entries skipped). */
  meanDiceBefore: number;
  meanDiceAfter: number;
  meanHd95Before: number;
  meanHd95After: number;
}

/** What `DIR/<id>/result.json` holds. */
export interface BatchRowResult {
  id: string;
  row: number;
  line: number;
  status: 'done' | 'failed';
  /** Input files (`fixed`, `moving`, `fixed_labels`, `moving_labels`, `weights`) and their SHA-256. */
  inputs: Record<string, HashedInput>;
  /** The registration options (what, with the input hashes, decides whether a rerun skips the row). */
  options: Record<string, unknown>;
  /** Output files, relative to the row's folder. */
  outputs?: Record<string, string>;
  overlap?: RowOverlap;
  /** Percentage of voxels where det(I + ∇u) ≤ 0. */
  foldingPercent?: number;
  /** Wall time of the row (hashing, registration, outputs, Dice), seconds. */
  seconds: number;
  /** Wall time of the registration and its outputs (`register`'s `seconds`). */
  registerSeconds?: number;
  warnings?: string[];
  error?: string;
  backend: string;
  finished: string;
}

/** One row's outcome in this run. */
export interface BatchRowReport {
  id: string;
  row: number;
  line: number;
  status: 'done' | 'skipped' | 'failed';
  seconds: number;
  error?: string;
  result?: BatchRowResult;
}

/** What {@link runBatch} reports. */
export interface BatchSummary {
  manifest: string;
  outDir: string;
  shard: Shard;
  /** Rows of the manifest, and of this shard. */
  manifestRows: number;
  rows: number;
  done: number;
  skipped: number;
  failed: number;
  /** Networks loaded by this shard: one per distinct weights folder. */
  networkLoads: number;
  /** The failures file of this shard (present when a row failed). */
  failuresFile: string;
  failures: Array<{ id: string; line: number; error: string }>;
  seconds: number;
}

/** SHA-256 (hex) of a file, streamed. */
export function sha256File(path: string): Promise<string> {
  return new Promise((done, reject) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('error', reject)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => done(hash.digest('hex')));
  });
}

/** SHA-256 of a network folder: `model.json` and the weight files it lists, in order. */
async function sha256Weights(dir: string): Promise<string> {
  const modelJson = join(dir, 'model.json');
  let manifest: { weightsManifest?: Array<{ paths?: string[] }> };
  try {
    manifest = JSON.parse(await readFile(modelJson, 'utf8'));
  } catch (e) {
    throw new UsageError(`weights ${dir}: cannot read model.json (${(e as Error).message})`);
  }
  const hash = createHash('sha256');
  hash.update(await sha256File(modelJson));
  for (const group of manifest.weightsManifest ?? []) {
    for (const p of group.paths ?? []) hash.update(await sha256File(join(dir, p)));
  }
  return hash.digest('hex');
}

function mean(values: number[]): number {
  const finite = values.filter((v) => Number.isFinite(v));
  return finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : Number.NaN;
}

/** Keys sorted at every depth, so equal options compare equal whatever their order. */
function canonicalJson(x: unknown): string {
  return JSON.stringify(x, (_, v) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

/**
 * Dice and HD95 per label of a row: the fixed labels against the moving labels (resampled
 * onto the fixed labels' grid by nearest neighbour through both affines when the grids
 * differ) before, and against the warped labels after (`labelOverlap`, as `regkit eval`).
 */
async function rowOverlap(
  fixedLabels: string,
  movingLabels: string,
  warpedLabels: string,
): Promise<RowOverlap> {
  const a = await readInput('fixed_labels', fixedLabels);
  const toDispose: tf.Tensor[] = [];
  const volumes = [a];
  try {
    const m = await readInput('moving_labels', movingLabels);
    volumes.push(m);
    const w = await readInput('warped labels', warpedLabels);
    volumes.push(w);
    const shape = a.data.shape.slice(1, -1);
    if (!tf.util.arraysEqual(a.data.shape, w.data.shape)) {
      throw new UsageError(
        `fixed_labels ${fixedLabels} [${shape.join(', ')}] is not on the grid of fixed [${w.data.shape.slice(1, -1).join(', ')}]`,
      );
    }
    const va = (await a.data.data()) as Float32Array;
    assertLabelMap('fixed_labels', fixedLabels, va);
    const onGrid = sameGrid(m, a) ? m.data : warpThroughAffines(m, null, a, 'nearest').data;
    if (onGrid !== m.data) toDispose.push(onGrid);
    const labels = await presentLabels(a.data, m.data);
    const vb = (await onGrid.data()) as Float32Array;
    const vw = (await w.data.data()) as Float32Array;
    const before = labelOverlap(va, vb, shape, a.spacing, labels);
    const after = labelOverlap(va, vw, shape, a.spacing, labels);
    return {
      labels,
      diceBefore: before.dice,
      diceAfter: after.dice,
      meanDiceBefore: mean(before.dice),
      meanDiceAfter: mean(after.dice),
      meanHd95Before: mean(before.hd95),
      meanHd95After: mean(after.hd95),
    };
  } finally {
    tf.dispose(toDispose);
    disposeVolumes(...volumes);
  }
}

/** Files of a row's folder, relative to it. */
export const ROW_FILES = {
  warped: 'warped.nii.gz',
  field: 'field.nii.gz',
  labels: 'labels.nii.gz',
  result: 'result.json',
} as const;

/** The failures file of shard I of N in `outDir`: one JSON object per failed row. */
export function failuresFile(outDir: string, shard: { index: number; count: number }): string {
  return join(outDir, `failures-${shard.index}-of-${shard.count}.jsonl`);
}

async function readResult(path: string): Promise<BatchRowResult | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as BatchRowResult;
  } catch {
    return null;
  }
}

async function writeJson(path: string, value: unknown): Promise<void> {
  const tx = new OutputTransaction(true);
  tx.stage(path, path, new TextEncoder().encode(`${JSON.stringify(value, null, 2)}\n`));
  await tx.commit();
}

/**
 * `regkit batch`: registers every row of a manifest that belongs to this shard (row r to
 * shard r mod N, {@link resolveShard}) through {@link registerCommand}, the function of
 * `regkit register`, so a row's outputs are those of `regkit register` with the same options.
 * Each row writes `DIR/<id>/warped.nii.gz`, `field.nii.gz` (ITK/ANTs, the total), `labels.nii.gz`
 * (with `moving_labels`) and last `result.json` ({@link BatchRowResult}: Dice before/after with
 * `fixed_labels`, folding, time, options, SHA-256 of the inputs), every file written to a
 * temporary and renamed.
 *
 * Resumable: a row whose `result.json` says done with the same input hashes and options, its
 * outputs present, is skipped; any other row is redone from scratch (its old files removed first), so a run
 * killed at any moment and restarted finishes the rest; temporaries of dead processes are
 * removed. A failing row writes `result.json` with `status: 'failed'` and its error, is added
 * to the shard's {@link failuresFile}, and the next row runs. Networks are loaded once per
 * weights folder and shared by the rows. Manifest and option errors are {@link UsageError}s
 * thrown before any row runs.
 */
export async function runBatch(o: BatchOptions): Promise<BatchSummary> {
  const t0 = performance.now();
  const shard = resolveShard(o.shard, o.shards, o.env ?? process.env);
  const rows = await readManifest(o.manifest);
  const similarity = o.similarity ?? 'lncc';
  if (!SIMILARITIES.includes(similarity)) {
    throw new UsageError(`--similarity must be ${SIMILARITIES.join(', ')}, got '${similarity}'`);
  }
  const instance: Record<string, unknown> = {};
  for (const k of INSTANCE_KEYS) if (o[k] !== undefined) instance[k] = o[k];
  registerPlan({ fixed: '', moving: '', out: '', ...instance }); // flag errors before any row
  if (o.maxVoxels !== undefined && !(o.maxVoxels === 0 || o.maxVoxels >= 64)) {
    throw new UsageError(`--max-voxels must be 0 (no cap) or ≥ 64, got ${o.maxVoxels}`);
  }
  // the bundled weights of network rows that name none, checked before any row runs
  const bundled = new Map<string, string>();
  for (const r of rows) {
    if (!r.method || r.weights || bundled.has(r.method)) continue;
    const dir = await bundledWeights(r.method);
    if (!dir) {
      throw new UsageError(
        `manifest ${o.manifest} line ${r.line}: method ${r.method} has no bundled weights; give its folder in column 'weights'`,
      );
    }
    bundled.set(r.method, dir);
  }
  const outDir = resolve(o.outDir);
  try {
    await mkdir(outDir, { recursive: true });
  } catch (e) {
    throw new UsageError(`--out-dir ${o.outDir} cannot be created (${(e as Error).message})`);
  }
  if (!statSync(outDir).isDirectory())
    throw new UsageError(`--out-dir ${o.outDir} is not a folder`);
  removeStaleTemporaries(outDir);
  const mine = rows.filter((r) => r.row % shard.count === shard.index);
  const failures: BatchSummary['failures'] = [];
  const failuresPath = failuresFile(outDir, shard);
  const networks = new Map<string, Promise<RegistrationNetwork>>();
  const weightHashes = new Map<string, Promise<string>>();
  let networkLoads = 0;
  const network = (dir: string) => {
    let net = networks.get(dir);
    if (!net) {
      networkLoads++;
      net = loadRegistrationNetwork(dir);
      networks.set(dir, net);
    }
    return net;
  };
  const backend = tf.getBackend();
  const counts = { done: 0, skipped: 0, failed: 0 };
  o.progress?.start(`shard ${shard.index}/${shard.count}`, mine.length);
  try {
    for (const [k, r] of mine.entries()) {
      const started = performance.now();
      const dir = join(outDir, r.id);
      const resultPath = join(dir, ROW_FILES.result);
      removeStaleTemporaries(dir);
      const weights = r.method ? (r.weights ?? bundled.get(r.method)!) : undefined;
      const options: Record<string, unknown> = r.method
        ? { method: r.method }
        : { method: 'instance', similarity: r.similarity ?? similarity, ...instance };
      const inputs: Record<string, HashedInput> = {};
      let report: BatchRowReport;
      try {
        for (const [name, path] of [
          ['fixed', r.fixed],
          ['moving', r.moving],
          ['fixed_labels', r.fixedLabels],
          ['moving_labels', r.movingLabels],
        ] as const) {
          if (!path) continue;
          inputs[name] = {
            path,
            sha256: await sha256File(path).catch((e: Error) => {
              throw new UsageError(`${name} ${path} cannot be read (${e.message})`);
            }),
          };
        }
        if (weights) {
          let h = weightHashes.get(weights);
          if (!h) {
            h = sha256Weights(weights);
            weightHashes.set(weights, h);
          }
          inputs.weights = { path: weights, sha256: await h };
        }
        const previous = await readResult(resultPath);
        const hashes = (x: Record<string, HashedInput>) =>
          canonicalJson(Object.fromEntries(Object.entries(x).map(([n, v]) => [n, v.sha256])));
        if (
          previous?.status === 'done' &&
          hashes(previous.inputs ?? {}) === hashes(inputs) &&
          canonicalJson(previous.options) === canonicalJson(options) &&
          Object.values(previous.outputs ?? {}).every((f) => existsSync(join(dir, f)))
        ) {
          report = {
            id: r.id,
            row: r.row,
            line: r.line,
            status: 'skipped',
            seconds: (performance.now() - started) / 1000,
            result: previous,
          };
        } else {
          // redone from scratch: no file of an older run stays beside the new ones
          await mkdir(dir, { recursive: true });
          for (const f of Object.values(ROW_FILES)) await rm(join(dir, f), { force: true });
          const out = join(dir, ROW_FILES.warped);
          const field = join(dir, ROW_FILES.field);
          const labels = r.movingLabels ? join(dir, ROW_FILES.labels) : undefined;
          const ro: RegisterCommandOptions = {
            fixed: r.fixed,
            moving: r.moving,
            out,
            field,
            force: true,
            ...(r.method ? { method: r.method, weights: weights! } : { ...instance }),
            ...(r.method ? {} : { similarity: r.similarity ?? similarity }),
            ...(labels ? { movingLabels: r.movingLabels!, outLabels: labels } : {}),
          };
          const silent: Progress = { start() {}, update() {}, stop() {} };
          const summary = await registerCommand(ro, silent, undefined, { network });
          const outputs: Record<string, string> = {
            warped: ROW_FILES.warped,
            field: ROW_FILES.field,
          };
          if (labels) outputs.labels = ROW_FILES.labels;
          const result: BatchRowResult = {
            id: r.id,
            row: r.row,
            line: r.line,
            status: 'done',
            inputs,
            options,
            outputs,
            foldingPercent: summary.foldingPercent,
            seconds: 0,
            registerSeconds: summary.seconds,
            warnings: summary.warnings,
            backend,
            finished: '',
          };
          if (r.fixedLabels && labels) {
            result.overlap = await rowOverlap(r.fixedLabels, r.movingLabels!, labels);
          }
          result.seconds = (performance.now() - started) / 1000;
          result.finished = new Date().toISOString();
          await writeJson(resultPath, result);
          report = {
            id: r.id,
            row: r.row,
            line: r.line,
            status: 'done',
            seconds: result.seconds,
            result,
          };
        }
      } catch (e) {
        const error = (e as Error).message ?? String(e);
        const seconds = (performance.now() - started) / 1000;
        const result: BatchRowResult = {
          id: r.id,
          row: r.row,
          line: r.line,
          status: 'failed',
          inputs,
          options,
          seconds,
          error,
          backend,
          finished: new Date().toISOString(),
        };
        failures.push({ id: r.id, line: r.line, error });
        // the folder holds the failed result.json alone, no output of an older run
        await mkdir(dir, { recursive: true })
          .then(async () => {
            for (const f of Object.values(ROW_FILES)) await rm(join(dir, f), { force: true });
            await writeJson(resultPath, result);
          })
          .catch(() => undefined); // the failures file still records it
        await writeFailures(failuresPath, failures);
        report = { id: r.id, row: r.row, line: r.line, status: 'failed', seconds, error, result };
      }
      counts[report.status]++;
      o.progress?.update(k + 1, rowLine(report));
      o.onRow?.(report);
    }
  } finally {
    o.progress?.stop();
    for (const net of networks.values()) await net.then((n) => n.dispose()).catch(() => undefined);
  }
  if (failures.length === 0) await rm(failuresPath, { force: true });
  return {
    manifest: o.manifest,
    outDir,
    shard,
    manifestRows: rows.length,
    rows: mine.length,
    ...counts,
    networkLoads,
    failuresFile: failuresPath,
    failures,
    seconds: (performance.now() - t0) / 1000,
  };
}

async function writeFailures(
  path: string,
  failures: Array<{ id: string; line: number; error: string }>,
): Promise<void> {
  const tx = new OutputTransaction(true);
  tx.stage(
    path,
    path,
    new TextEncoder().encode(failures.map((f) => `${JSON.stringify(f)}\n`).join('')),
  );
  await tx.commit();
}

function fmt(x: number | undefined, digits: number): string {
  return x !== undefined && Number.isFinite(x) ? x.toFixed(digits) : 'n/a';
}

/**
 * The progress line of a row: `id done 1.2 s, Dice 0.612 → 0.834, folding 0.000 %`,
 * `id skipped (up to date: Dice …, folding …)` or `id FAILED (line n): error`.
 */
function rowLine(r: BatchRowReport): string {
  if (r.status === 'failed') return `${r.id} FAILED (line ${r.line}): ${r.error}`;
  const res = r.result;
  const facts = [
    ...(res?.overlap
      ? [`Dice ${fmt(res.overlap.meanDiceBefore, 3)} → ${fmt(res.overlap.meanDiceAfter, 3)}`]
      : []),
    `folding ${fmt(res?.foldingPercent, 3)} %`,
  ].join(', ');
  return r.status === 'skipped'
    ? `${r.id} skipped (up to date: ${facts})`
    : `${r.id} done ${fmt(r.seconds, 1)} s, ${facts}`;
}

/** Columns of `results.csv`. */
export const RESULTS_COLUMNS = [
  'id',
  'row',
  'status',
  'method',
  'similarity',
  'fixed',
  'moving',
  'fixed_labels',
  'moving_labels',
  'dice_before',
  'dice_after',
  'hd95_before_mm',
  'hd95_after_mm',
  'folding_percent',
  'seconds',
  'error',
] as const;

function csvField(v: unknown): string {
  if (v === undefined || v === null) return '';
  const s = typeof v === 'number' ? (Number.isFinite(v) ? String(v) : '') : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** What {@link mergeBatch} reports. */
export interface MergeSummary {
  file: string;
  rows: number;
  done: number;
  failed: number;
  /** Rows of `manifest` with no `result.json` (0 without a manifest). */
  missing: number;
  /** Folders whose `result.json` cannot be parsed. */
  unreadable: string[];
}

/**
 * `regkit batch merge DIR`: one `DIR/results.csv` ({@link RESULTS_COLUMNS}) over every
 * `DIR/<id>/result.json`, ordered by manifest row, written to a temporary and renamed. With
 * `manifest`, its rows without a result are listed with status `missing`.
 */
export async function mergeBatch(outDir: string, manifest?: string): Promise<MergeSummary> {
  let entries: string[];
  try {
    entries = readdirSync(outDir, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name);
  } catch (e) {
    throw new UsageError(`batch merge: ${outDir} cannot be read (${(e as Error).message})`);
  }
  const results: BatchRowResult[] = [];
  const unreadable: string[] = [];
  for (const name of entries) {
    const path = join(outDir, name, ROW_FILES.result);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch {
      continue; // not a row folder, or a row not finished
    }
    try {
      results.push(JSON.parse(text) as BatchRowResult);
    } catch {
      unreadable.push(path);
    }
  }
  type Line = Record<(typeof RESULTS_COLUMNS)[number], unknown>;
  const lines: Line[] = results.map((r) => ({
    id: r.id,
    row: r.row,
    status: r.status,
    method: r.options?.method,
    similarity: r.options?.similarity,
    fixed: r.inputs?.fixed?.path,
    moving: r.inputs?.moving?.path,
    fixed_labels: r.inputs?.fixed_labels?.path,
    moving_labels: r.inputs?.moving_labels?.path,
    dice_before: r.overlap?.meanDiceBefore,
    dice_after: r.overlap?.meanDiceAfter,
    hd95_before_mm: r.overlap?.meanHd95Before,
    hd95_after_mm: r.overlap?.meanHd95After,
    folding_percent: r.foldingPercent,
    seconds: r.seconds,
    error: r.error,
  }));
  let missing = 0;
  if (manifest) {
    const have = new Set(results.map((r) => r.id));
    for (const r of await readManifest(manifest)) {
      if (have.has(r.id)) continue;
      missing++;
      lines.push({
        id: r.id,
        row: r.row,
        status: 'missing',
        method: r.method ?? 'instance',
        similarity: r.similarity,
        fixed: r.fixed,
        moving: r.moving,
        fixed_labels: r.fixedLabels,
        moving_labels: r.movingLabels,
        dice_before: undefined,
        dice_after: undefined,
        hd95_before_mm: undefined,
        hd95_after_mm: undefined,
        folding_percent: undefined,
        seconds: undefined,
        error: undefined,
      });
    }
  }
  lines.sort((a, b) => Number(a.row) - Number(b.row) || String(a.id).localeCompare(String(b.id)));
  const csv = [
    RESULTS_COLUMNS.join(','),
    ...lines.map((l) => RESULTS_COLUMNS.map((c) => csvField(l[c])).join(',')),
  ].join('\n');
  const file = join(outDir, 'results.csv');
  removeStaleTemporaries(outDir);
  const tx = new OutputTransaction(true);
  tx.stage('results.csv', file, new TextEncoder().encode(`${csv}\n`));
  await tx.commit();
  if (unreadable.length) {
    throw new RegkitError(
      `batch merge: wrote ${file}, but ${unreadable.length} result.json cannot be parsed: ${unreadable.join(', ')}`,
    );
  }
  return {
    file,
    rows: lines.length,
    done: results.filter((r) => r.status === 'done').length,
    failed: results.filter((r) => r.status === 'failed').length,
    missing,
    unreadable,
  };
}
