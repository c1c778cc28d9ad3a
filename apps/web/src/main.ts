/**
 * The page: picks the files, starts the registration worker, shows its progress, the
 * registration figure, a niivue overlay and Dice, and offers the warped image and the field as
 * NIfTI downloads and the figure as PNG.
 */
import type { RGBAImage } from '@regkit/io';
// the bundled demo pair of `regkit demo --case 2d` (ITK BrainWeb slices, Apache-2.0; see
// packages/cli/data/README.md)
import pdUrl from '../../../packages/cli/data/itk_brainweb_pd_slice.nii.gz?url';
import t1Url from '../../../packages/cli/data/itk_brainweb_t1_slice.nii.gz?url';
import type { BackendReport, InputFile, Reply, Request, SimilarityChoice } from './protocol.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** What the page knows of the last run, for the browser test (`window.regkit`). */
interface PageState {
  state: 'idle' | 'running' | 'done' | 'error';
  backend?: BackendReport;
  result?: Omit<Extract<Reply, { type: 'result' }>, 'figure' | 'files'> & {
    fieldBytes: number;
    warpedBytes: number;
    /** Size of the figure in pixels and of its PNG in bytes. */
    figure: { width: number; height: number; pngBytes: number };
  };
  error?: string;
  progress: { done: number; total: number }[];
}
const page: PageState = { state: 'idle', progress: [] };
(window as unknown as { regkit: PageState }).regkit = page;

const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' });
const progress = $<HTMLProgressElement>('progress');
const status = $<HTMLSpanElement>('status');
const buttons = [$<HTMLButtonElement>('register'), $<HTMLButtonElement>('demo')];
const urls: string[] = [];

function setState(s: PageState['state']): void {
  page.state = s;
  document.body.dataset.state = s;
  for (const b of buttons) b.disabled = s === 'running';
  if (s !== 'running') updateRegisterButton();
}

function showBackend(b: BackendReport): void {
  const kernels = b.kernels ? "regkit's WebAssembly-SIMD kernels" : "regkit's JavaScript kernels";
  const n = b.kernelThreads;
  const threads = b.kernels
    ? ` on ${n} thread${n === 1 ? '' : 's'}${n === 1 && b.kernelThreadsReason ? ` (${b.kernelThreadsReason})` : ''}`
    : '';
  $('backend').textContent =
    `backend: ${b.name}, ${kernels}${threads}` +
    `${b.crossOriginIsolated ? '' : ' (page not cross-origin isolated: no wasm threads)'}`;
  $('warnings').textContent = b.warnings.join('\n');
}

function draw(id: string, image: RGBAImage): void {
  const canvas = $<HTMLCanvasElement>(id);
  canvas.width = image.width;
  canvas.height = image.height;
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  const pixels = new Uint8ClampedArray(
    image.data.buffer as ArrayBuffer,
    image.data.byteOffset,
    image.data.length,
  );
  ctx.putImageData(new ImageData(pixels, image.width, image.height), 0, 0);
}

function blobUrl(bytes: Uint8Array, type = 'application/octet-stream'): string {
  const url = URL.createObjectURL(new Blob([bytes as BlobPart], { type }));
  urls.push(url);
  return url;
}

let niivue: import('@niivue/niivue').Niivue | null = null;

/** The fixed image with the warped one in red over it, in niivue (WebGL2; skipped without it). */
async function showOverlay(fixed: Uint8Array, warped: Uint8Array): Promise<void> {
  const note = $('niivue-status');
  try {
    const { Niivue } = await import('@niivue/niivue');
    if (!niivue) {
      niivue = new Niivue({
        backColor: [0, 0, 0, 1],
        show3Dcrosshair: false,
        isResizeCanvas: false,
      });
      await niivue.attachToCanvas($<HTMLCanvasElement>('niivue'));
    }
    await niivue.loadVolumes([
      { url: blobUrl(fixed), name: 'fixed.nii' },
      {
        url: blobUrl(warped),
        name: 'warped.nii.gz',
        colormap: 'red',
        opacity: Number($<HTMLInputElement>('opacity').value),
      },
    ]);
    note.textContent = '';
  } catch (e) {
    note.textContent = `niivue could not show the overlay (${(e as Error).message}); the slices above show the result.`;
  }
}

$<HTMLInputElement>('opacity').addEventListener('input', (e) => {
  if (niivue && niivue.volumes.length > 1)
    niivue.setOpacity(1, Number((e.target as HTMLInputElement).value));
});

function showResult(r: Extract<Reply, { type: 'result' }>): void {
  for (const u of urls.splice(0)) URL.revokeObjectURL(u);
  draw('figure', r.figure);
  const dice =
    r.diceBefore !== undefined && r.diceAfter !== undefined
      ? ` Mean Dice ${r.diceBefore.toFixed(3)} → ${r.diceAfter.toFixed(3)}.`
      : '';
  $('summary').textContent =
    `${r.shape.join('×')} voxels, ${r.similarity}, ${r.seconds.toFixed(1)} s on ${r.backend.name}.${dice} ` +
    `Folding ${r.foldingPercent.toFixed(2)} % of voxels.`;
  $<HTMLAnchorElement>('download-warped').href = blobUrl(r.files.warped, 'application/gzip');
  $<HTMLAnchorElement>('download-field').href = blobUrl(r.files.field, 'application/gzip');
  $<HTMLAnchorElement>('download-figure').href = blobUrl(r.files.figure, 'image/png');
  const notes = $('notes');
  notes.replaceChildren(
    ...r.notes.map((n) => Object.assign(document.createElement('li'), { textContent: n })),
  );
  $('results').hidden = false;
  const { figure, files, ...rest } = r;
  page.result = {
    ...rest,
    fieldBytes: files.field.length,
    warpedBytes: files.warped.length,
    figure: { width: figure.width, height: figure.height, pngBytes: files.figure.length },
  };
  void showOverlay(r.files.fixed, r.files.warped);
}

worker.onmessage = (e: MessageEvent<Reply>) => {
  const m = e.data;
  switch (m.type) {
    case 'backend':
      page.backend = m.backend;
      showBackend(m.backend);
      break;
    case 'status':
      status.textContent = m.text;
      break;
    case 'progress':
      page.progress.push({ done: m.done, total: m.total });
      progress.max = m.total;
      progress.value = m.done;
      status.textContent = `level ${m.level}/${m.levels}: ${m.done}/${m.total} iterations, similarity ${m.similarity.toFixed(4)}`;
      break;
    case 'result':
      progress.value = progress.max;
      status.textContent = 'done';
      showResult(m);
      setState('done');
      break;
    case 'error':
      page.error = m.message;
      status.textContent = m.message;
      setState('error');
      break;
  }
};
worker.onerror = (e) => {
  page.error = e.message;
  status.textContent = `the worker failed: ${e.message}`;
  setState('error');
};

async function fileInput(id: string): Promise<InputFile | undefined> {
  const f = $<HTMLInputElement>(id).files?.[0];
  return f ? { name: f.name, bytes: new Uint8Array(await f.arrayBuffer()) } : undefined;
}

function updateRegisterButton(): void {
  const ok =
    !!$<HTMLInputElement>('fixed').files?.length && !!$<HTMLInputElement>('moving').files?.length;
  $<HTMLButtonElement>('register').disabled = !ok || page.state === 'running';
}
for (const id of ['fixed', 'moving']) $(id).addEventListener('change', updateRegisterButton);

/** `?wasmPaths=<folder URL>`: where the worker looks for the .wasm files (tests of the fallback). */
const wasmPaths = new URLSearchParams(location.search).get('wasmPaths') ?? undefined;

function start(request: Request, transfer: Transferable[]): void {
  if (wasmPaths) request.wasmPaths = new URL(wasmPaths, location.href).href;
  page.result = undefined;
  page.error = undefined;
  page.progress = [];
  progress.value = 0;
  setState('running');
  worker.postMessage(request, transfer);
}

$('register').addEventListener('click', async () => {
  setState('running'); // at once: the files are read before the worker starts
  const [fixed, moving, fixedLabels, movingLabels] = await Promise.all(
    ['fixed', 'moving', 'fixed-labels', 'moving-labels'].map(fileInput),
  );
  if (!fixed || !moving) {
    setState('idle');
    return;
  }
  const similarity = $<HTMLSelectElement>('similarity').value as SimilarityChoice;
  const files = [fixed, moving, fixedLabels, movingLabels].filter((f) => !!f);
  start(
    { type: 'register', fixed, moving, fixedLabels, movingLabels, similarity },
    files.map((f) => f.bytes.buffer as ArrayBuffer),
  );
});

$('demo').addEventListener('click', async () => {
  setState('running');
  status.textContent = 'loading the demo pair';
  const get = async (url: string, name: string): Promise<InputFile> => {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`GET ${url} answered ${res.status}`);
    return { name, bytes: new Uint8Array(await res.arrayBuffer()) };
  };
  try {
    const [t1, pd] = await Promise.all([
      get(t1Url, 'itk_brainweb_t1_slice.nii.gz'),
      get(pdUrl, 'itk_brainweb_pd_slice.nii.gz'),
    ]);
    start({ type: 'demo', t1, pd }, [
      t1.bytes.buffer as ArrayBuffer,
      pd.bytes.buffer as ArrayBuffer,
    ]);
  } catch (e) {
    page.error = (e as Error).message;
    status.textContent = page.error;
    setState('error');
  }
});
