import {
  accessSync,
  constants,
  existsSync,
  lstatSync,
  readdirSync,
  realpathSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import { copyFile, link, lstat, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { createGzip } from 'node:zlib';
import type { tf } from '@regkit/core';
import { RegkitError } from '@regkit/core';
import {
  encodeDisplacementField,
  encodeDisplacementFieldChunks,
  encodeNifti,
  encodeNiftiChunks,
  encodeVolume,
  imageFormat,
  type NiftiWriteDatatype,
  readVolume,
  type Volume,
} from '@regkit/io';
import { UsageError } from './errors.js';

function canonical(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return resolve(path);
  }
}

/** What an output file holds, which fixes its extension. */
export type OutputKind = 'image' | 'field' | 'png' | 'transform';

/**
 * Output file endings per kind: images as NIfTI, MetaImage (`.mha`, one file), NRRD or
 * FreeSurfer MGH; displacement fields as ITK vector images (NIfTI, `.mha`, `.nrrd`: MGH has
 * no field convention).
 */
export const OUTPUT_EXTENSIONS: Record<OutputKind, string[]> = {
  image: ['.nii', '.nii.gz', '.mha', '.nrrd', '.mgh', '.mgz'],
  field: ['.nii', '.nii.gz', '.mha', '.nrrd'],
  png: ['.png'],
  transform: ['.txt', '.tfm', '.mat'],
};

const FIELD_OPTIONS = new Set(['--field', '--deformable-field', '--inverse-field', '--true-field']);

/**
 * The kind of an output option: `--png` is a PNG preview, `--affine-out` an ITK/ANTs affine
 * transform file, the field options displacement fields, every other output an image.
 */
function outputKind(option: string): OutputKind {
  if (option === '--png') return 'png';
  if (option === '--affine-out') return 'transform';
  return FIELD_OPTIONS.has(option) ? 'field' : 'image';
}

/**
 * Checks output paths before any work: none may be an input (inputs are never overwritten),
 * two outputs may not coincide, existing files are refused unless `force`, the extension
 * must be one the output can be written as ({@link OUTPUT_EXTENSIONS}: images `.nii`,
 * `.nii.gz`, `.mha`, `.nrrd`, `.mgh`, `.mgz`; fields the same but MGH; `.png` for `--png`,
 * `.txt`/`.tfm`/`.mat` for `--affine-out`), and the
 * folder must exist and be writable. Removes stale temporaries of dead processes next to
 * the outputs ({@link removeStaleTemporaries}). Throws a {@link UsageError} naming the option
 * and the path.
 */
export function checkOutputs(
  outputs: Record<string, string | undefined>,
  inputs: Record<string, string | undefined>,
  force: boolean,
): void {
  const inputPaths = new Map<string, string>();
  for (const [name, p] of Object.entries(inputs)) if (p) inputPaths.set(canonical(p), name);
  const seen = new Map<string, string>();
  const dirs = new Set<string>();
  for (const [name, p] of Object.entries(outputs)) {
    if (!p) continue;
    const c = canonical(p);
    const input = inputPaths.get(c);
    if (input)
      throw new UsageError(`${name} ${p} is the input ${input}: inputs are never overwritten`);
    const other = seen.get(c);
    if (other) throw new UsageError(`${name} and ${other} are the same file ${p}`);
    seen.set(c, name);
    const kind = outputKind(name);
    const lower = p.toLowerCase();
    if (!OUTPUT_EXTENSIONS[kind].some((e) => lower.endsWith(e))) {
      throw new UsageError(
        `${name} ${p}: the file name must end with ${OUTPUT_EXTENSIONS[kind].join(', ')}`,
      );
    }
    const dir = dirname(resolve(p));
    let isDir = false;
    try {
      isDir = statSync(dir).isDirectory();
    } catch {
      throw new UsageError(`${name} ${p}: the folder ${dir} does not exist`);
    }
    if (!isDir) throw new UsageError(`${name} ${p}: ${dir} is not a folder`);
    try {
      accessSync(dir, constants.W_OK);
    } catch {
      throw new UsageError(`${name} ${p}: the folder ${dir} is not writable`);
    }
    let stat: ReturnType<typeof lstatSync> | null = null;
    try {
      stat = lstatSync(p);
    } catch {
      stat = null;
    }
    if (stat?.isDirectory()) throw new UsageError(`${name} ${p} is a folder`);
    if (stat && !force) throw new UsageError(`${name} ${p} exists: pass --force to replace it`);
    dirs.add(dir);
  }
  for (const dir of dirs) removeStaleTemporaries(dir);
}

/**
 * Temporary files of regkit's writers: `.<name>.<pid>.<random>.tmp` (this package's
 * {@link OutputTransaction}, `writeFileAtomic` of `@regkit/io` and the weight writer of
 * `@regkit/networks`), for the kinds of files regkit writes (`.nii`, `.nii.gz`, `.mha`, `.nrrd`, `.mgh`, `.mgz`, `.png`,
 * `.json`, `.bin`, ITK/ANTs transforms, and `regkit batch`'s `.jsonl` and `.csv`). Group 1 is the final name, group 2 the pid of the process that wrote it.
 */
export const TEMPORARY_NAME =
  /^\.(.+\.(?:nii|nii\.gz|mha|nrrd|mgh|mgz|png|json|jsonl|csv|bin|txt|tfm|mat))\.(\d+)\.[0-9a-z]+\.tmp$/i;

/** Whether a process with this pid is running (on this machine). */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else
    return (e as { code?: string }).code === 'EPERM';
  }
}

/**
 * Removes the temporaries ({@link TEMPORARY_NAME}) in `dir` whose writing process is no longer
 * running: leftovers of runs killed while writing (`kill -9`, power loss). Temporaries of
 * live processes are kept. Best effort; returns the paths removed.
 */
export function removeStaleTemporaries(dir: string): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const name of names) {
    const m = TEMPORARY_NAME.exec(name);
    if (!m || processAlive(Number(m[2]))) continue;
    const path = join(dir, name);
    try {
      if (!lstatSync(path).isFile()) continue;
      unlinkSync(path);
      removed.push(path);
    } catch {
      // another run removed it first, or it is not ours to remove
    }
  }
  return removed;
}

/** An output claimed by a concurrent run between the start-up check and the write: exit 1. */
export class OutputClaimedError extends RegkitError {
  constructor(message: string) {
    super(message);
    this.name = 'OutputClaimedError';
  }
}

/** An output's bytes in pieces, each made when it is written (see io's `encodeNiftiChunks`). */
export interface ChunkedBytes {
  bytes: number;
  chunks: () => Iterable<Uint8Array>;
}

/** An output's bytes: ready, pending, or made on demand (at commit, one output at a time). */
export type StagedBytes =
  | Uint8Array
  | ChunkedBytes
  | Promise<Uint8Array>
  | (() => Uint8Array | ChunkedBytes | Promise<Uint8Array>);

const isChunked = (b: Uint8Array | ChunkedBytes): b is ChunkedBytes => !(b instanceof Uint8Array);

interface Staged {
  option: string;
  path: string;
  bytes: StagedBytes | null;
  /** gzip-compress (level 1) while writing. */
  gzip: boolean;
}

const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV', 'EMLINK']);

/**
 * The outputs of one run, written all together or not at all. {@link stage} collects the
 * bytes of each output once everything is computed; {@link commit} writes each to a
 * temporary `.<name>.<pid>.<random>.tmp` beside it, then claims the final names: without
 * `force` by a hard link that fails when the name exists (atomic: of two runs writing the same
 * file, exactly one wins, the other fails with {@link OutputClaimedError}), with `force` by a
 * rename that replaces. On any failure the temporaries and the outputs this run already
 * claimed are removed.
 */
export class OutputTransaction {
  private readonly staged: Staged[] = [];

  constructor(private readonly force: boolean) {}

  /**
   * Adds an output: its bytes, a promise of them, or a function making them at commit time
   * (so that the large outputs are encoded, written and freed one after another instead of
   * being held together).
   */
  stage(option: string, path: string, bytes: StagedBytes): void {
    this.staged.push({ option, path, bytes, gzip: false });
  }

  /**
   * Adds an image or field output (uncompressed bytes, or a function making them at commit
   * time), gzip-compressed as it is written (streamed: no compressed copy in memory) when the
   * name ends in `.gz` (`.nii.gz`) or `.mgz`.
   */
  stageNifti(
    option: string,
    path: string,
    raw: Uint8Array | ChunkedBytes | (() => Uint8Array | ChunkedBytes),
  ): void {
    this.staged.push({ option, path, bytes: raw, gzip: /\.(gz|mgz)$/i.test(path) });
  }

  /** Writes every staged output (see the class); returns `{ option: path }`. */
  async commit(): Promise<Record<string, string>> {
    const temporaries: string[] = [];
    const claimed: Array<{ path: string; ino: number; dev: number }> = [];
    try {
      const written: Array<Staged & { tmp: string; ino: number; dev: number }> = [];
      for (const s of this.staged) {
        const made = s.bytes;
        const bytes = await (typeof made === 'function' ? made() : made);
        s.bytes = null; // written below: nothing here holds it any longer
        const tmp = join(
          dirname(s.path),
          `.${basename(s.path)}.${process.pid}.${Math.random().toString(36).slice(2, 10)}.tmp`,
        );
        let handle: Awaited<ReturnType<typeof open>>;
        try {
          handle = await open(tmp, 'wx');
        } catch (e) {
          throw new RegkitError(`${s.option} ${s.path}: cannot write (${(e as Error).message})`);
        }
        temporaries.push(tmp);
        try {
          // a chunked output is made piece by piece as it is written: no whole copy of it
          const pieces = isChunked(bytes!) ? bytes.chunks() : [bytes!];
          if (s.gzip) {
            // compressed piece by piece into the file (the same bytes as a one-shot gzip)
            const gz = createGzip({ level: 1 });
            const file = handle;
            const drained = (async () => {
              for await (const chunk of gz) await file.write(chunk as Buffer);
            })();
            for (const p of pieces) {
              if (!gz.write(Buffer.from(p.buffer, p.byteOffset, p.byteLength))) {
                await new Promise((r) => gz.once('drain', r));
              }
            }
            gz.end();
            await drained;
          } else {
            for (const p of pieces) await handle.write(p);
          }
          await handle.sync();
        } catch (e) {
          throw new RegkitError(`${s.option} ${s.path}: cannot write (${(e as Error).message})`);
        } finally {
          await handle.close();
        }
        const st = await lstat(tmp);
        written.push({ ...s, tmp, ino: st.ino, dev: st.dev });
      }
      for (const w of written) {
        if (this.force) {
          await rename(w.tmp, w.path);
          claimed.push({ path: w.path, ino: w.ino, dev: w.dev });
          continue;
        }
        try {
          await link(w.tmp, w.path);
          claimed.push({ path: w.path, ino: w.ino, dev: w.dev });
        } catch (e) {
          const code = (e as { code?: string }).code;
          if (code === 'EEXIST') {
            throw new OutputClaimedError(
              `${w.option} ${w.path} was created by another process while this run was computing; nothing was written (pass --force to replace it)`,
            );
          }
          if (!code || !NO_HARD_LINKS.has(code)) {
            throw new RegkitError(`${w.option} ${w.path}: cannot write (${(e as Error).message})`);
          }
          // no hard links here (some network or FAT file systems): an exclusive copy
          try {
            await copyFile(w.tmp, w.path, constants.COPYFILE_EXCL);
          } catch (e2) {
            if ((e2 as { code?: string }).code === 'EEXIST') {
              throw new OutputClaimedError(
                `${w.option} ${w.path} was created by another process while this run was computing; nothing was written (pass --force to replace it)`,
              );
            }
            throw new RegkitError(`${w.option} ${w.path}: cannot write (${(e2 as Error).message})`);
          }
          const st = await lstat(w.path);
          claimed.push({ path: w.path, ino: st.ino, dev: st.dev });
        }
      }
      for (const tmp of temporaries) await unlink(tmp).catch(() => undefined);
      return Object.fromEntries(this.staged.map((s) => [s.option, s.path]));
    } catch (e) {
      for (const tmp of temporaries) await unlink(tmp).catch(() => undefined);
      for (const c of claimed) {
        // only what this run wrote: a file another run put there meanwhile stays
        const st = await lstat(c.path).catch(() => null);
        if (st && st.ino === c.ino && st.dev === c.dev) await unlink(c.path).catch(() => undefined);
      }
      throw e;
    }
  }
}

/**
 * Reads an image named by an option (NIfTI, MetaImage, NRRD or MGH, by its ending: see
 * `readVolume` of `@regkit/io`), with the option in the error when it is missing.
 */
export async function readInput(option: string, path: string | undefined): Promise<Volume> {
  if (!path) throw new UsageError(`${option} is required`);
  if (!existsSync(path)) throw new UsageError(`${option} ${path} does not exist`);
  return readVolume(path);
}

/**
 * The uncompressed bytes of an image output in the format of its name: NIfTI (`.nii`,
 * `.nii.gz`), MetaImage (`.mha`), NRRD (`.nrrd`) or MGH (`.mgh`, `.mgz`); the gzip of
 * `.nii.gz`/`.mgz` is added by {@link OutputTransaction.stageNifti} as it writes.
 */
export function encodeImageFor(
  path: string,
  volume: Volume,
  datatype?: NiftiWriteDatatype,
): Uint8Array {
  const format = imageFormat(path) ?? 'nifti';
  const dt = datatype ? { datatype } : {};
  return format === 'nifti' ? encodeNifti(volume, dt) : encodeVolume(volume, { format, ...dt });
}

/** The uncompressed bytes of a displacement-field output: ITK vector image as NIfTI, `.mha` or `.nrrd`. */
export function encodeFieldFor(path: string, field: tf.Tensor, reference: Volume): Uint8Array {
  const format = imageFormat(path);
  return encodeDisplacementField(
    field,
    reference,
    format === 'metaimage' || format === 'nrrd' ? { format } : {},
  );
}

const SINGLE_FILE_NIFTI = /\.nii(\.gz)?$/i;

/**
 * {@link encodeImageFor} for a staged output: a `.nii`/`.nii.gz` path gives the bytes in
 * pieces read in place from `volume.data` at commit (no copy of the file in memory; the
 * tensor must stay alive until then), any other format its bytes.
 */
export function stagedImageFor(
  path: string,
  volume: Volume,
  datatype?: NiftiWriteDatatype,
): Uint8Array | ChunkedBytes {
  if (!SINGLE_FILE_NIFTI.test(path)) return encodeImageFor(path, volume, datatype);
  return encodeNiftiChunks(volume, datatype ? { datatype } : {});
}

/** {@link encodeFieldFor} for a staged output, in pieces for `.nii`/`.nii.gz` (see {@link stagedImageFor}). */
export function stagedFieldFor(
  path: string,
  field: tf.Tensor,
  reference: Volume,
): Uint8Array | ChunkedBytes {
  if (!SINGLE_FILE_NIFTI.test(path)) return encodeFieldFor(path, field, reference);
  return encodeDisplacementFieldChunks(field, reference);
}

/** Disposes the tensors of volumes. */
export function disposeVolumes(...volumes: Array<Volume | undefined | null>): void {
  for (const v of volumes) v?.data.dispose();
}
