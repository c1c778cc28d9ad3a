import { Gunzip, gzipSync, Unzlib, zlibSync } from 'fflate';
import { ioFail } from './errors.js';

/** True in Node.js (file paths and node:zlib available). */
export const isNode = typeof process !== 'undefined' && !!process.versions?.node;

/** Imports a module by name, hidden from bundlers (node built-ins in browser builds). */
async function importOptional(name: string): Promise<unknown> {
  return import(/* webpackIgnore: true */ /* @vite-ignore */ name);
}

type Fs = typeof import('node:fs/promises');
type Path = typeof import('node:path');
type Zlib = typeof import('node:zlib');

let fsMod: Promise<Fs> | null = null;
let pathMod: Promise<Path> | null = null;
let zlibMod: Promise<Zlib | null> | null = null;

/** node:fs/promises (throws a RegkitIOError outside Node). */
export async function nodeFs(file: string): Promise<Fs> {
  if (!isNode) ioFail(file, 'IO', 'file paths need Node.js; pass bytes (Uint8Array) instead');
  fsMod ??= importOptional('node:fs/promises') as Promise<Fs>;
  return fsMod;
}

/** node:path. */
export async function nodePath(): Promise<Path> {
  pathMod ??= importOptional('node:path') as Promise<Path>;
  return pathMod;
}

/** node:zlib, or null outside Node (fflate is used then). */
export async function nodeZlib(): Promise<Zlib | null> {
  zlibMod ??= isNode
    ? (importOptional('node:zlib') as Promise<Zlib>).catch(() => null)
    : Promise.resolve(null);
  return zlibMod;
}

/** True when the bytes start with the gzip magic 1f 8b. */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

function gzipMessage(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.replace(/\s+/g, ' ').trim();
}

/**
 * Streams `gz` through fflate's inflater and stops once `limit` bytes came out (or the input
 * ends): the output never grows much beyond `limit` whatever the compression ratio. Returns
 * the decompressed prefix (possibly shorter than `limit`, when the stream holds less).
 * A corrupt or truncated stream throws `GZIP` unless `limit` bytes were already produced.
 */
export function gunzipPrefix(
  gz: Uint8Array,
  limit: number,
  file: string,
  kind: 'gzip' | 'zlib' = 'gzip',
): Uint8Array {
  const chunks: Uint8Array[] = [];
  let total = 0;
  let ended = false;
  const onData = (chunk: Uint8Array, final: boolean) => {
    chunks.push(chunk);
    total += chunk.length;
    if (final) ended = true;
  };
  const g = kind === 'gzip' ? new Gunzip(onData) : new Unzlib(onData);
  // small input steps: deflate reaches ~1000:1, so 1 KB of input is at most ~1 MB of output past `limit`
  const step = 1024;
  try {
    for (let off = 0; off < gz.length && total < limit && !ended; off += step) {
      const end = Math.min(gz.length, off + step);
      g.push(gz.subarray(off, end), end === gz.length);
    }
  } catch (e) {
    if (total < limit) ioFail(file, 'GZIP', `corrupt ${kind} stream (${gzipMessage(e)})`);
  }
  if (total < limit && !ended) {
    ioFail(file, 'GZIP', `truncated ${kind} stream (decompressed ${total} bytes before it ended)`);
  }
  const out = new Uint8Array(Math.min(total, limit));
  let off = 0;
  for (const c of chunks) {
    if (off >= out.length) break;
    const n = Math.min(c.length, out.length - off);
    out.set(c.subarray(0, n), off);
    off += n;
  }
  return out;
}

/**
 * Decompresses at most `limit` bytes of `gz` (node:zlib where available, it is 2–4× faster
 * than fflate; fflate in browsers and when the stream holds more than `limit` bytes).
 */
export async function gunzipLimited(
  gz: Uint8Array,
  limit: number,
  file: string,
  kind: 'gzip' | 'zlib' = 'gzip',
): Promise<Uint8Array> {
  const zlib = await nodeZlib();
  if (zlib) {
    try {
      const o = { maxOutputLength: Math.max(limit + 65536, 1) };
      const out = kind === 'gzip' ? zlib.gunzipSync(gz, o) : zlib.inflateSync(gz, o);
      return new Uint8Array(out.buffer, out.byteOffset, out.length);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code !== 'ERR_BUFFER_TOO_LARGE' && !(e instanceof RangeError)) {
        const m = gzipMessage(e);
        ioFail(
          file,
          'GZIP',
          /unexpected end/i.test(m)
            ? `truncated ${kind} stream (${m})`
            : `corrupt ${kind} stream (${m})`,
        );
      }
      // more data than the header needs: stop at the limit below
    }
  }
  return gunzipPrefix(gz, limit, file, kind);
}

/** zlib-compresses bytes (RFC 1950, MetaImage `CompressedData = True`; node:zlib in Node, else fflate). */
export async function zlibBytes(bytes: Uint8Array, level: number): Promise<Uint8Array> {
  const zlib = await nodeZlib();
  if (zlib) {
    const out = await new Promise<Buffer>((resolve, reject) =>
      zlib.deflate(bytes, { level }, (err, res) => (err ? reject(err) : resolve(res))),
    );
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  }
  return zlibBytesSync(bytes, level);
}

/** Synchronous zlib compression with fflate (browsers, `encodeVolume`). */
export function zlibBytesSync(bytes: Uint8Array, level: number): Uint8Array {
  return zlibSync(bytes, { level: level as 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 });
}

/** gzip-compresses bytes (node:zlib in Node, else fflate). */
export async function gzipBytes(bytes: Uint8Array, level: number): Promise<Uint8Array> {
  const zlib = await nodeZlib();
  if (zlib) {
    const out = await new Promise<Buffer>((resolve, reject) =>
      zlib.gzip(bytes, { level }, (err, res) => (err ? reject(err) : resolve(res))),
    );
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  }
  return gzipSync(bytes, { level: level as 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 });
}

/** Synchronous gzip with fflate (browsers, `encodeNifti`). */
export function gzipBytesSync(bytes: Uint8Array, level: number): Uint8Array {
  return gzipSync(bytes, { level: level as 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 });
}

/** The last path component (for error messages and temp names). */
export function baseName(path: string): string {
  const parts = path.split(/[\\/]/);
  return parts[parts.length - 1] || path;
}

/**
 * Writes `bytes` to `path` atomically: a temporary file in the same directory, then a rename
 * (or, with `overwrite` false, a hard link that fails when `path` exists). The temporary file
 * is removed on failure.
 */
export async function writeFileAtomic(
  path: string,
  bytes: Uint8Array,
  overwrite: boolean,
): Promise<void> {
  await writeFilesAtomic([{ path, bytes }], overwrite);
}

/**
 * Writes several files (a `.hdr/.img` pair) as atomically as the file system allows: every
 * temporary file is written first (same directory as its target), then they are renamed in
 * order (the last one — the header — appears last). With `overwrite` false, any existing
 * target throws `EXISTS` before anything is written, and targets are hard-linked (failing
 * when they appeared meanwhile; the ones already linked are removed again). Temporary files
 * never stay behind.
 */
export async function writeFilesAtomic(
  files: ReadonlyArray<{ path: string; bytes: Uint8Array }>,
  overwrite: boolean,
): Promise<void> {
  const first = files[0]?.path ?? '';
  const fs = await nodeFs(first);
  const p = await nodePath();
  if (!overwrite) {
    for (const f of files) {
      if (await exists(fs, f.path)) ioFail(f.path, 'EXISTS', 'file exists and overwrite is false');
    }
  }
  const tmps = files.map((f) =>
    p.join(
      p.dirname(f.path),
      `.${baseName(f.path)}.${process.pid}.${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}.tmp`,
    ),
  );
  const placed: string[] = [];
  let current = first;
  try {
    for (let i = 0; i < files.length; i++) {
      current = files[i]!.path;
      await fs.writeFile(tmps[i]!, files[i]!.bytes);
    }
    for (let i = 0; i < files.length; i++) {
      current = files[i]!.path;
      if (overwrite) {
        await fs.rename(tmps[i]!, current);
      } else {
        await fs.link(tmps[i]!, current);
        placed.push(current);
        await fs.unlink(tmps[i]!);
      }
    }
  } catch (e) {
    for (const t of tmps) await fs.unlink(t).catch(() => undefined);
    for (const q of placed) await fs.unlink(q).catch(() => undefined);
    const code = (e as { code?: string }).code;
    if (code === 'EEXIST') ioFail(current, 'EXISTS', 'file exists and overwrite is false');
    ioFail(current, 'IO', `cannot write (${(e as Error).message})`);
  }
}

async function exists(fs: Fs, path: string): Promise<boolean> {
  try {
    await fs.lstat(path);
    return true;
  } catch {
    return false;
  }
}
