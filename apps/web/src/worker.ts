/**
 * The registration worker: reads the images, registers them with `registerImages` of
 * `@regkit/register` on the wasm backend with `@regkit/kernels`, and sends back slices, Dice
 * and the NIfTI files. Running here keeps the page responsive; nothing leaves the machine.
 */
import { initBackend, randomSmoothField, tf, warp } from '@regkit/core';
import {
  defaultHeader,
  encodeDisplacementField,
  encodeNifti,
  encodePng,
  readNifti,
  renderRegistrationFigure,
  resampleToReference,
  type Volume,
  volumeLike,
} from '@regkit/io';
import * as kernels from '@regkit/kernels';
import { foldingPercent, intensityClasses, meanDice } from '@regkit/metrics';
import { normalizeIntensity, registerImages } from '@regkit/register';
import plainWasm from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm?url';
import simdWasm from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm?url';
import threadedWasm from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm?url';
import type { BackendReport, InputFile, Reply, Request, SimilarityChoice } from './protocol.js';

const post = (reply: Reply, transfer: Transferable[] = []) =>
  (self as unknown as Worker).postMessage(reply, transfer);

let backend: Promise<BackendReport> | null = null;

/** wasm (threads when the page is cross-origin isolated) with regkit's kernels; cpu with a warning otherwise. */
function startBackend(wasmPaths?: string): Promise<BackendReport> {
  backend ??= (async () => {
    // tfjs's threaded wasm build starts its pthread workers from the text of its factory
    // function (`factory.toString()` in a Blob), which loses the variables a bundle puts
    // around it: every thread dies with "ReferenceError: e is not defined" (measured with
    // Vite 8 and tfjs 4.22 in Chromium 156). Declaring that variable inside the function (a
    // Vite transform of the worker bundle) lets the threaded build start, but tfjs then
    // reported 1 thread (getThreadsCount) even after setThreadsCount(2) on this 2-core
    // machine, so the SIMD build, single-threaded, is used.
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
    const warnings: string[] = [];
    const name = await initBackend(undefined, {
      kernels,
      // the .wasm files as Vite emitted them (hashed names): no copy step, no 404
      wasmPaths: wasmPaths ?? {
        'tfjs-backend-wasm.wasm': new URL(plainWasm, self.location.href).href,
        'tfjs-backend-wasm-simd.wasm': new URL(simdWasm, self.location.href).href,
        'tfjs-backend-wasm-threaded-simd.wasm': new URL(threadedWasm, self.location.href).href,
      },
      onWarning: (m) => {
        warnings.push(m);
        console.warn(m);
      },
    });
    return {
      name,
      kernels: kernels.kernelsRegistered(name),
      kernelThreads: kernels.kernelThreads(),
      kernelThreadsReason: kernels.kernelThreadsReason(),
      cores: self.navigator?.hardwareConcurrency ?? 1,
      crossOriginIsolated: self.crossOriginIsolated === true,
      warnings,
    };
  })();
  return backend;
}

/** A NIfTI file, or a PNG/JPEG read as a grey 2D image (mean of R, G, B; 1 mm pixels). */
async function readImage(file: InputFile): Promise<Volume> {
  if (/\.(png|jpe?g)$/i.test(file.name)) {
    const bitmap = await createImageBitmap(new Blob([file.bytes as BlobPart]));
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const ctx = canvas.getContext('2d');
    if (!ctx) throw new Error(`${file.name}: no 2D canvas to decode the image`);
    ctx.drawImage(bitmap, 0, 0);
    const { data, width, height } = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
    // array axis 0 = image column (x, to the right), axis 1 = row from the bottom (y, up):
    // the RAS layout renderSlice shows upright
    const grey = new Float32Array(width * height);
    for (let x = 0; x < width; x++) {
      for (let y = 0; y < height; y++) {
        const p = ((height - 1 - y) * width + x) * 4;
        grey[x * height + y] = (data[p]! + data[p + 1]! + data[p + 2]!) / 3;
      }
    }
    const affine = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];
    return {
      data: tf.tensor(grey, [1, width, height, 1]),
      affine,
      spacing: [1, 1],
      header: { ...defaultHeader([width, height], 1), sformCode: 1, qformCode: 1 },
      warnings: [],
    };
  }
  return readNifti(file.bytes, { name: file.name });
}

function dispose(...vs: Array<Volume | tf.Tensor | undefined>): void {
  for (const v of vs) {
    if (!v) continue;
    if (v instanceof tf.Tensor) v.dispose();
    else v.data.dispose();
  }
}

interface Pair {
  fixed: Volume;
  moving: Volume;
  fixedLabels?: tf.Tensor;
  movingLabels?: tf.Tensor;
  similarity: SimilarityChoice;
  notes: string[];
}

/** The demo pair: T1 → PD deformed by a seeded random smooth field (`regkit demo --case 2d`). */
async function demoPair(t1File: InputFile, pdFile: InputFile): Promise<Pair> {
  const t1 = await readImage(t1File);
  const pd = await readImage(pdFile);
  const spatial = t1.data.shape.slice(1, -1);
  const truth = randomSmoothField(spatial, { maxDisplacement: 6, controlSpacing: 32, seed: 7 });
  const labels = await intensityClasses(t1.data);
  const fixed = volumeLike(pd, warp(pd.data, truth));
  const fixedLabels = warp(labels, truth, { interpolation: 'nearest' });
  dispose(pd, truth);
  return {
    fixed,
    moving: t1,
    fixedLabels,
    movingLabels: labels,
    similarity: 'mi',
    notes: [
      'demo: T1 slice → proton-density slice deformed by a random smooth field (seed 7, up to 6 voxels); labels: 4 T1 intensity classes',
    ],
  };
}

/** The user's pair: the moving image (and labels) resampled onto the fixed grid when they differ. */
async function userPair(r: Extract<Request, { type: 'register' }>): Promise<Pair> {
  const notes: string[] = [];
  const fixed = await readImage(r.fixed);
  let moving = await readImage(r.moving);
  const fixedNd = fixed.data.rank - 2;
  if (moving.data.rank - 2 !== fixedNd) {
    throw new Error(
      `${r.fixed.name} is ${fixedNd}D and ${r.moving.name} is ${moving.data.rank - 2}D: give two 2D or two 3D images`,
    );
  }
  for (const [v, f] of [
    [fixed, r.fixed],
    [moving, r.moving],
  ] as const) {
    if (v.data.shape.at(-1) !== 1) {
      throw new Error(`${f.name}: ${v.data.shape.at(-1)} channels; give single-channel images`);
    }
  }
  const sameGrid =
    tf.util.arraysEqual(fixed.data.shape, moving.data.shape) &&
    fixed.affine.every((a, i) => Math.abs(a - moving.affine[i]!) < 1e-4 * (1 + Math.abs(a)));
  if (!sameGrid) {
    const resampled = resampleToReference(moving, fixed);
    notes.push(
      `${r.moving.name} resampled onto the grid of ${r.fixed.name} (${fixed.data.shape.slice(1, -1).join('×')}) through their affines`,
    );
    dispose(moving);
    moving = resampled;
  }
  let fixedLabels: tf.Tensor | undefined;
  let movingLabels: tf.Tensor | undefined;
  if (r.fixedLabels && r.movingLabels) {
    const fl = await readImage(r.fixedLabels);
    const ml = await readImage(r.movingLabels);
    fixedLabels = tf.round(resampleToReference(fl, fixed, { interpolation: 'nearest' }).data);
    const mlOnFixed = resampleToReference(ml, fixed, { interpolation: 'nearest' });
    movingLabels = tf.round(mlOnFixed.data);
    dispose(fl, ml, mlOnFixed);
  }
  return { fixed, moving, fixedLabels, movingLabels, similarity: r.similarity, notes };
}

async function run(r: Request): Promise<void> {
  const report = await startBackend(r.wasmPaths);
  post({ type: 'backend', backend: report });
  post({ type: 'status', text: 'reading the images' });
  const pair = r.type === 'demo' ? await demoPair(r.t1, r.pd) : await userPair(r);
  const { fixed, moving, fixedLabels, movingLabels } = pair;
  const keep: tf.Tensor[] = [];
  try {
    const t0 = performance.now();
    const f = await normalizeIntensity(fixed.data);
    const m = await normalizeIntensity(moving.data);
    keep.push(f, m);
    post({ type: 'status', text: `registering (${pair.similarity}) on ${report.name}` });
    const result = await registerImages(f, m, {
      similarity: pair.similarity,
      seed: 7,
      returnVelocity: false,
      onProgress: (p) =>
        post({
          type: 'progress',
          done: p.done,
          total: p.total,
          level: p.level,
          levels: p.levels,
          similarity: p.similarity,
        }),
    });
    result.affine?.dispose();
    const field = result.forward;
    keep.push(field);
    const warpedData = warp(moving.data, field);
    keep.push(warpedData);
    const seconds = (performance.now() - t0) / 1000;
    const warped = volumeLike(fixed, warpedData);

    let diceBefore: number | undefined;
    let diceAfter: number | undefined;
    let warpedLabels: tf.Tensor | undefined;
    if (fixedLabels && movingLabels) {
      warpedLabels = warp(movingLabels, field, { interpolation: 'nearest' });
      keep.push(warpedLabels);
      diceBefore = await meanDice(fixedLabels, movingLabels);
      diceAfter = await meanDice(fixedLabels, warpedLabels);
    }
    const folding = await foldingPercent(field);
    post({ type: 'status', text: 'drawing the figure and writing the files' });
    // the figure of `regkit register --png` / `regkit demo` (@regkit/io)
    const figure = await renderRegistrationFigure(
      {
        fixed,
        moving: volumeLike(fixed, moving.data),
        warped,
        field,
        ...(fixedLabels && movingLabels && warpedLabels
          ? { fixedLabels, movingLabels, warpedLabels }
          : {}),
      },
      {
        title: `regkit in the browser (${report.name}): ${r.type === 'demo' ? 'demo pair' : `${r.moving.name} → ${r.fixed.name}`}`,
        figures: {
          similarity: pair.similarity,
          ...(diceBefore !== undefined && diceAfter !== undefined ? { diceBefore, diceAfter } : {}),
          foldingPercent: folding,
          seconds,
        },
      },
    );
    const files = {
      fixed: encodeNifti(fixed),
      warped: encodeNifti(warped, { gzip: true }),
      field: encodeDisplacementField(field, fixed, { gzip: true }),
      figure: encodePng(figure),
    };
    const transfer = [
      figure.data.buffer,
      ...Object.values(files).map((b) => b.buffer),
    ] as ArrayBuffer[];
    post(
      {
        type: 'result',
        backend: report,
        shape: fixed.data.shape.slice(1, -1),
        similarity: pair.similarity,
        seconds,
        diceBefore,
        diceAfter,
        foldingPercent: folding,
        figure,
        files,
        notes: pair.notes,
      },
      transfer,
    );
  } finally {
    for (const t of keep) t.dispose();
    dispose(fixed, moving, fixedLabels, movingLabels);
  }
}

self.onmessage = (e: MessageEvent<Request>) => {
  run(e.data).catch((err: unknown) => {
    const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    post({ type: 'error', message });
  });
};
