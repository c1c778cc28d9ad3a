import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { RegkitError, tf } from '@regkit/core';
import type { RegistrationNetwork } from '@regkit/networks';
import { bundledWeights, loadRegistrationNetwork } from '@regkit/networks';
import { UsageError } from './errors.js';
import { assertLabelMap, labelOverlap, presentLabels } from './evaluate.js';
import { disposeVolumes, OutputTransaction, readInput, removeStaleTemporaries } from './files.js';
import { sameGrid, warpThroughAffines } from './geometry.js';
import { readManifest, resolveShard, type Shard, SIMILARITIES } from './manifest.js';
import type { Progress } from './progress.js';
import { type RegisterCommandOptions, registerCommand, registerPlan } from './register.js';

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
  | 'samples'
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
  'samples',
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
