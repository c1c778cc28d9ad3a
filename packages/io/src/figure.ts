import { tf } from '@regkit/core';
import { ioFail } from './errors.js';
import { drawText, GLYPH_H, measureText } from './font.js';
import { ioOrientation } from './matrix.js';
import { writeFileAtomic } from './platform.js';
import { encodePng, labelColour, type RGBAImage } from './png.js';
import type { Volume } from './types.js';

/** Images of a registration on one voxel grid (the fixed image's), for {@link renderRegistrationFigure}. */
export interface RegistrationFigureInputs {
  /** Fixed image `[1, ...spatial, C]` (channel 0 is shown); its affine and spacing orient and scale the views. */
  fixed: Volume | tf.Tensor;
  /** Moving image resampled onto the fixed grid (before registration), same spatial shape. */
  moving: Volume | tf.Tensor;
  /** Moving image warped by the registration, same spatial shape. */
  warped: Volume | tf.Tensor;
  /** Displacement field `[1, ...spatial, ndim]` in voxels: adds the deformed-grid panel. */
  field?: tf.Tensor;
  /** Integer label maps on the same grid: outlined (one colour per label) on their panels. */
  fixedLabels?: Volume | tf.Tensor;
  movingLabels?: Volume | tf.Tensor;
  warpedLabels?: Volume | tf.Tensor;
}

/** Figures written in the caption (each only when given). */
export interface RegistrationFigureFigures {
  /** Similarity name (e.g. `lncc`) and its value before / after registration. */
  similarity?: string;
  similarityBefore?: number;
  similarityAfter?: number;
  /** Mean Dice before / after, over `labels` labels. */
  diceBefore?: number;
  diceAfter?: number;
  labels?: number;
  /** % of voxels with det(I + ∇u) ≤ 0. */
  foldingPercent?: number;
  /** Registration time in seconds. */
  seconds?: number;
}

/** Options of {@link renderRegistrationFigure}. */
export interface RegistrationFigureOptions {
  /** Side of the square cell of each panel in pixels (default 192; raised so the figure is at least `minWidth` wide). */
  panelSize?: number;
  /** Smallest figure width in pixels (default 512). */
  minWidth?: number;
  /** Deformed-grid line spacing in voxels (default max(4, round(largest side / 12))). */
  gridSpacing?: number;
  /** Tiles per side of the checkerboard (default 8). */
  tiles?: number;
  /** 3D: the voxel index of each view's cut along spatial axes 0, 1, 2 (default the middles ⌊n/2⌋). */
  cut?: [number, number, number];
  /** First caption line. */
  title?: string;
  /** Numbers for the caption. */
  figures?: RegistrationFigureFigures;
  /** More caption lines (wrapped to the figure width). */
  notes?: string[];
  /** Integer magnification of the 5×7 font (default 2). */
  textScale?: number;
}

/** Where one panel's image lies in the figure (the drawn slice, without its cell's padding). */
export interface FigurePanel {
  /** `fixed`, `moving`, `warped`, `difference`, `checkerboard` or `grid`. */
  name: string;
  /** `axial`, `coronal`, `sagittal` (3D) or `slice` (2D or one voxel thick). */
  view: string;
  /** The spatial axis cut (−1 in 2D) and the index of the cut. */
  axis: number;
  index: number;
  x: number;
  y: number;
  width: number;
  height: number;
}

/** A rendered figure: RGBA pixels and the placement of every panel. */
export interface RegistrationFigure extends RGBAImage {
  panels: FigurePanel[];
}

/** Margin around the figure and gap between cells, in pixels. */
export const FIGURE_MARGIN_PX = 8;
export const FIGURE_GAP_PX = 8;

const BACKGROUND = [24, 24, 24] as const;
const TEXT: [number, number, number] = [235, 235, 235];
const GRID: [number, number, number] = [255, 210, 0];
const TITLES: Record<string, string> = {
  fixed: 'fixed',
  moving: 'moving',
  warped: 'warped',
  difference: '|fixed - warped|',
  checkerboard: 'checkerboard',
  grid: 'deformed grid',
};
const WORLD_VIEW = ['sagittal', 'coronal', 'axial'];

interface Scalars {
  /** Values of one channel, C order over the spatial axes. */
  values: Float32Array;
}

const fmtShape = (s: readonly number[]) => `[${s.join(', ')}]`;

function unwrap(
  name: string,
  v: Volume | tf.Tensor,
): { t: tf.Tensor; affine: number[] | null; spacing: number[] | null } {
  if (v instanceof tf.Tensor) return { t: v, affine: null, spacing: null };
  if (v && typeof v === 'object' && (v as Volume).data instanceof tf.Tensor) {
    const vol = v as Volume;
    return { t: vol.data, affine: vol.affine, spacing: vol.spacing };
  }
  ioFail('', 'OPTION', `renderRegistrationFigure(): '${name}' must be a Volume or a tf.Tensor`);
}

/** Reads channel `c` of `x` (`[1, ...spatial, C]`), checking its spatial shape. */
async function channelOf(
  name: string,
  x: tf.Tensor,
  spatial: number[],
  c: number,
  channels?: number,
): Promise<Scalars> {
  const fn = 'renderRegistrationFigure';
  if (x.isDisposed) ioFail('', 'SHAPE', `${fn}(): '${name}' is disposed`);
  const s = x.shape.slice(1, -1);
  if (
    x.shape[0] !== 1 ||
    !tf.util.arraysEqual(s, spatial) ||
    (channels !== undefined && x.shape[x.rank - 1] !== channels)
  ) {
    ioFail(
      '',
      'SHAPE',
      `${fn}(): '${name}' ${fmtShape(x.shape)} must be [1, ${spatial.join(', ')}, ${channels ?? 'C'}] (the grid of 'fixed')`,
    );
  }
  const n = spatial.reduce((a, b) => a * b, 1);
  const cut = tf.tidy(() => {
    const begin = x.shape.map((_, a) => (a === x.rank - 1 ? c : 0));
    const size = x.shape.map((d, a) => (a === x.rank - 1 ? 1 : d));
    const y = tf.reshape(tf.slice(x, begin, size), [n]);
    return y.dtype === 'float32' ? y : tf.cast(y, 'float32');
  });
  try {
    return { values: (await cut.data()) as Float32Array };
  } finally {
    cut.dispose();
  }
}

function percentile(sorted: Float32Array, q: number): number {
  if (sorted.length === 0) return 0;
  const pos = (q / 100) * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** 1st and 99th percentiles of the finite values (of at most 2^18 evenly strided samples). */
function volumeWindow(values: Float32Array, lowPct = 1): [number, number] {
  const step = Math.max(1, Math.ceil(values.length / 2 ** 18));
  const picked = new Float32Array(Math.ceil(values.length / step));
  let n = 0;
  for (let i = 0; i < values.length; i += step) {
    const v = values[i]!;
    if (Number.isFinite(v)) picked[n++] = v;
  }
  const sorted = picked.subarray(0, n).sort();
  return [percentile(sorted, lowPct), percentile(sorted, 99)];
}

const grey = (v: number, lo: number, hi: number): number => {
  const g = hi > lo ? ((v - lo) / (hi - lo)) * 255 : v > lo ? 255 : 0;
  return g < 0 ? 0 : g > 255 ? 255 : Number.isNaN(g) ? 0 : Math.round(g);
};

/** One view: the cut axis and index, the in-plane axes and how they map to the screen. */
interface View {
  name: string;
  axis: number;
  index: number;
  /** Voxel axis shown horizontally (left → right) and vertically (top → bottom), with their sign. */
  h: number;
  v: number;
  hFlip: boolean;
  vFlip: boolean;
}

function viewsOf(spatial: number[], affine: number[] | null, cut?: number[]): View[] {
  const nd = spatial.length;
  const ornt = affine
    ? ioOrientation(affine)
    : ([
        [0, 1],
        [1, 1],
        [2, 1],
      ] as Array<[number, number]>);
  const make = (axis: number, index: number, name: string): View => {
    const [p, q] = [0, 1, 2].slice(0, nd).filter((a) => a !== axis) as [number, number];
    const [wp, sp] = ornt[p] ?? [p, 1];
    const [wq, sq] = ornt[q] ?? [q, 1];
    // the in-plane axis along the lower world axis is horizontal (R right; A or S up)
    const pHorizontal = wp < 0 || wq < 0 ? true : wp < wq;
    const [h, v, sh, sv] = pHorizontal ? [p, q, sp, sq] : [q, p, sq, sp];
    return { name, axis, index, h, v, hFlip: sh < 0, vFlip: sv < 0 };
  };
  if (nd === 2) return [make(-1, 0, 'slice')];
  const thin = spatial.indexOf(1);
  if (thin >= 0) return [make(thin, 0, 'slice')];
  const views: View[] = [];
  for (const world of [2, 1, 0]) {
    const found = ornt.findIndex(([ax]) => ax === world);
    const axis = found >= 0 ? found : world;
    const index = cut?.[axis] ?? Math.floor(spatial[axis]! / 2);
    if (!Number.isInteger(index) || index < 0 || index >= spatial[axis]!) {
      ioFail(
        '',
        'OPTION',
        `renderRegistrationFigure(): 'cut'[${axis}] must be an integer in [0, ${spatial[axis]! - 1}], got ${String(index)}`,
      );
    }
    views.push(make(axis, index, WORLD_VIEW[world]!));
  }
  return views;
}

/** Wraps `line` at spaces to at most `chars` characters a line. */
function wrap(line: string, chars: number): string[] {
  const out: string[] = [];
  let rest = line;
  while ([...rest].length > chars) {
    const cutAt = rest.lastIndexOf(' ', chars);
    const at = cutAt > 0 ? cutAt : chars;
    out.push(rest.slice(0, at));
    rest = rest.slice(at).trimStart();
  }
  out.push(rest);
  return out;
}

const num = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(1) : x.toFixed(4));

/** The caption lines of {@link renderRegistrationFigure}. */
export function figureCaption(opts: RegistrationFigureOptions = {}): string[] {
  const lines: string[] = [];
  if (opts.title) lines.push(opts.title);
  const f = opts.figures ?? {};
  const pair = (a?: number, b?: number, digits = num) =>
    a !== undefined && b !== undefined
      ? `${digits(a)} → ${digits(b)} (before → after)`
      : b !== undefined
        ? digits(b)
        : a !== undefined
          ? `${digits(a)} (before)`
          : undefined;
  const sim = pair(f.similarityBefore, f.similarityAfter);
  if (f.similarity || sim) lines.push(`similarity ${f.similarity ?? ''}${sim ? `: ${sim}` : ''}`);
  const dice = pair(f.diceBefore, f.diceAfter, (x) => x.toFixed(3));
  if (dice)
    lines.push(`mean Dice${f.labels !== undefined ? ` over ${f.labels} labels` : ''}: ${dice}`);
  if (f.foldingPercent !== undefined) {
    lines.push(`folding: ${f.foldingPercent.toFixed(3)} % of voxels with det(I + grad u) ≤ 0`);
  }
  if (f.seconds !== undefined) lines.push(`time: ${f.seconds.toFixed(1)} s`);
  lines.push(...(opts.notes ?? []));
  return lines;
}

/**
 * Draws a registration as one readable figure: a row per view (axial, coronal and sagittal
 * cuts through the middle of a 3D volume; one row in 2D) and the columns fixed, moving,
 * warped, |fixed − warped| (fixed and warped each scaled to [0, 1] by its own 1st–99th
 * percentile window first; black at 0, white at the 99th percentile of the difference or 0.1,
 * whichever is larger), a fixed/warped
 * checkerboard and, with a field, the deformed grid over the warped image: iso-lines of
 * x + u(x) every `gridSpacing` voxels (a regular grid of the moving image as it looks after
 * warping). Slices are oriented as {@link renderSlice} (world R right, A or S up), shown
 * with their physical aspect ratio (voxel spacing), and upscaled to fill a square cell of
 * `panelSize` pixels: bilinear for intensities and the field, nearest for labels. Label
 * maps are outlined (the pixels of a label with a 4-neighbour of another label, in that
 * label's colour). Titles and the caption ({@link figureCaption}) use an embedded 5×7
 * bitmap font. Pure JavaScript, deterministic: the same inputs give the same pixels.
 *
 * Layout: margin {@link FIGURE_MARGIN_PX}; per row a title strip `9·textScale + 8` px high,
 * then the cells, `panelSize` px square, {@link FIGURE_GAP_PX} apart; the caption below.
 *
 * @returns RGBA pixels and the rectangle of every panel's slice.
 */
export async function renderRegistrationFigure(
  inputs: RegistrationFigureInputs,
  opts: RegistrationFigureOptions = {},
): Promise<RegistrationFigure> {
  const fn = 'renderRegistrationFigure';
  if (!inputs || typeof inputs !== 'object')
    ioFail('', 'OPTION', `${fn}(): 'inputs' must be an object`);
  const fixedIn = unwrap('fixed', inputs.fixed);
  const main = fixedIn.t;
  if (main.isDisposed || (main.rank !== 4 && main.rank !== 5) || main.shape[0] !== 1) {
    ioFail(
      '',
      'SHAPE',
      `${fn}(): 'fixed' must be [1, nx, ny, C] or [1, nx, ny, nz, C], got ${fmtShape(main.shape)}`,
    );
  }
  const spatial = main.shape.slice(1, -1);
  const nd = spatial.length;
  const spacing = fixedIn.spacing?.slice(0, nd) ?? spatial.map(() => 1);
  if (spacing.length !== nd || !spacing.every((s) => s > 0 && Number.isFinite(s))) {
    ioFail(
      '',
      'SHAPE',
      `${fn}(): 'fixed' spacing ${fmtShape(spacing)} must be ${nd} positive numbers`,
    );
  }
  const textScale = opts.textScale ?? 2;
  const tiles = opts.tiles ?? 8;
  const minWidth = opts.minWidth ?? 512;
  for (const [k, v] of [
    ['textScale', textScale],
    ['tiles', tiles],
    ['minWidth', minWidth],
  ] as const) {
    if (!Number.isInteger(v) || v < 1) {
      ioFail('', 'OPTION', `${fn}(): '${k}' must be a positive integer, got ${String(v)}`);
    }
  }
  const gridSpacing = opts.gridSpacing ?? Math.max(4, Math.round(Math.max(...spatial) / 12));
  if (!(gridSpacing > 0)) ioFail('', 'OPTION', `${fn}(): 'gridSpacing' must be positive`);

  const images = {
    fixed: await channelOf('fixed', main, spatial, 0),
    moving: await channelOf('moving', unwrap('moving', inputs.moving).t, spatial, 0),
    warped: await channelOf('warped', unwrap('warped', inputs.warped).t, spatial, 0),
  };
  const labelsOf = async (name: 'fixedLabels' | 'movingLabels' | 'warpedLabels') => {
    const l = inputs[name];
    if (l === undefined) return null;
    // a new array: the values read may be the tensor's own storage (cpu backend)
    const { values } = await channelOf(name, unwrap(name, l).t, spatial, 0);
    const rounded = new Float32Array(values.length);
    for (let i = 0; i < values.length; i++) {
      const x = values[i]!;
      rounded[i] = Number.isFinite(x) ? Math.round(x) : 0;
    }
    return { values: rounded };
  };
  const labels = {
    fixed: await labelsOf('fixedLabels'),
    moving: await labelsOf('movingLabels'),
    warped: await labelsOf('warpedLabels'),
  };
  let field: Float32Array | null = null;
  if (inputs.field !== undefined) {
    const g = inputs.field;
    if (!(g instanceof tf.Tensor) || g.isDisposed || g.rank !== nd + 2) {
      ioFail(
        '',
        'SHAPE',
        `${fn}(): 'field' must be a displacement field [1, ${spatial.join(', ')}, ${nd}]`,
      );
    }
    const comps: Float32Array[] = [];
    for (let k = 0; k < nd; k++) comps.push((await channelOf('field', g, spatial, k, nd)).values);
    field = new Float32Array(comps[0]!.length * nd);
    for (let i = 0; i < comps[0]!.length; i++)
      for (let k = 0; k < nd; k++) field[i * nd + k] = comps[k]![i]!;
  }

  const winF = volumeWindow(images.fixed.values);
  const winM = volumeWindow(images.moving.values);
  const unit = (v: number, [lo, hi]: [number, number]) => {
    const t = hi > lo ? (v - lo) / (hi - lo) : v > lo ? 1 : 0;
    return t < 0 ? 0 : t > 1 ? 1 : Number.isNaN(t) ? 0 : t;
  };
  // each image scaled by its own window, so that a global intensity change is no difference
  const winW = volumeWindow(images.warped.values);
  const diff = new Float32Array(images.fixed.values.length);
  for (let i = 0; i < diff.length; i++) {
    diff[i] = Math.abs(unit(images.fixed.values[i]!, winF) - unit(images.warped.values[i]!, winW));
  }
  // shown up to its 99th percentile, but never stretching differences below 0.1 to white
  const winD: [number, number] = [0, Math.max(0.1, volumeWindow(diff)[1])];

  const views = viewsOf(spatial, fixedIn.affine, opts.cut);
  const names = ['fixed', 'moving', 'warped', 'difference', 'checkerboard'];
  if (field) names.push('grid');
  const nCols = names.length;
  const M = FIGURE_MARGIN_PX;
  const G = FIGURE_GAP_PX;
  const requested = opts.panelSize ?? 192;
  if (!Number.isInteger(requested) || requested < 8) {
    ioFail(
      '',
      'OPTION',
      `${fn}(): 'panelSize' must be an integer ≥ 8, got ${String(opts.panelSize)}`,
    );
  }
  const S = Math.max(requested, Math.ceil((minWidth - 2 * M - (nCols - 1) * G) / nCols));
  const width = 2 * M + nCols * S + (nCols - 1) * G;
  const headerH = GLYPH_H * textScale + 8;
  const lineH = (GLYPH_H + 2) * textScale;
  const chars = Math.max(8, Math.floor((width - 2 * M + textScale) / (6 * textScale)));
  const caption = figureCaption(opts).flatMap((l) => wrap(l, chars));
  const rowsH = views.length * (headerH + S) + (views.length - 1) * G;
  const height = M + rowsH + (caption.length ? G + caption.length * lineH : 0) + M;
  const data = new Uint8Array(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    data[4 * i] = BACKGROUND[0];
    data[4 * i + 1] = BACKGROUND[1];
    data[4 * i + 2] = BACKGROUND[2];
    data[4 * i + 3] = 255;
  }
  const image: RegistrationFigure = { width, height, data, panels: [] };
  const strides = spatial.map((_, a) => spatial.slice(a + 1).reduce((x, y) => x * y, 1));

  views.forEach((view, row) => {
    const nh = spatial[view.h]!;
    const nv = spatial[view.v]!;
    const mmH = nh * spacing[view.h]!;
    const mmV = nv * spacing[view.v]!;
    const k = S / Math.max(mmH, mmV);
    const w = Math.max(1, Math.min(S, Math.round(mmH * k)));
    const h = Math.max(1, Math.min(S, Math.round(mmV * k)));
    // continuous voxel coordinates of pixel centres, clamped to the grid (edge extension)
    const coord = (i: number, n: number, pixels: number, flip: boolean) => {
      let t = ((i + 0.5) * n) / pixels - 0.5;
      t = t < 0 ? 0 : Math.min(t, n - 1);
      return flip ? n - 1 - t : t;
    };
    const ch = Float64Array.from({ length: w }, (_, c) => coord(c, nh, w, view.hFlip));
    // the top row shows the highest index along a positive vertical axis
    const cv = Float64Array.from({ length: h }, (_, r) => coord(r, nv, h, !view.vFlip));
    const base = view.axis >= 0 ? view.index * strides[view.axis]! : 0;
    const sh = strides[view.h]!;
    const sv = strides[view.v]!;
    /** Bilinear sample of component `comp` of `vals` (`stride` values per voxel). */
    const linear = (vals: Float32Array, th: number, tv: number, stride = 1, comp = 0): number => {
      const h0 = Math.floor(th);
      const v0 = Math.floor(tv);
      const h1 = h0 + 1 < nh ? h0 + 1 : h0;
      const v1 = v0 + 1 < nv ? v0 + 1 : v0;
      const fh = th - h0;
      const fv = tv - v0;
      const at = (a: number, b: number) => vals[(base + a * sh + b * sv) * stride + comp]!;
      return (
        (1 - fh) * ((1 - fv) * at(h0, v0) + fv * at(h0, v1)) +
        fh * ((1 - fv) * at(h1, v0) + fv * at(h1, v1))
      );
    };
    const nearest = (vals: Float32Array, th: number, tv: number): number =>
      vals[base + Math.round(th) * sh + Math.round(tv) * sv]!;

    const y0 = M + row * (headerH + S + G);
    names.forEach((name, col) => {
      const cx = M + col * (S + G);
      const cy = y0 + headerH;
      const x = cx + Math.floor((S - w) / 2);
      const y = cy + Math.floor((S - h) / 2);
      image.panels.push({
        name,
        view: view.name,
        axis: view.axis,
        index: view.index,
        x,
        y,
        width: w,
        height: h,
      });
      // the cell is black; the slice is centred in it
      for (let r = 0; r < S; r++) {
        data.fill(0, 4 * ((cy + r) * width + cx), 4 * ((cy + r) * width + cx + S));
        for (let c = 0; c < S; c++) data[4 * ((cy + r) * width + cx + c) + 3] = 255;
      }
      const put = (c: number, r: number, rgb: readonly [number, number, number]) => {
        const o = 4 * ((y + r) * width + x + c);
        data[o] = rgb[0];
        data[o + 1] = rgb[1];
        data[o + 2] = rgb[2];
      };
      for (let r = 0; r < h; r++) {
        const tv = cv[r]!;
        for (let c = 0; c < w; c++) {
          const th = ch[c]!;
          let g: number;
          if (name === 'fixed') g = grey(linear(images.fixed.values, th, tv), ...winF);
          else if (name === 'moving') g = grey(linear(images.moving.values, th, tv), ...winM);
          else if (name === 'warped') g = grey(linear(images.warped.values, th, tv), ...winM);
          else if (name === 'difference') g = grey(linear(diff, th, tv), ...winD);
          else if (name === 'checkerboard') {
            const odd = (Math.floor((c * tiles) / w) + Math.floor((r * tiles) / h)) % 2 === 1;
            g = odd
              ? grey(linear(images.warped.values, th, tv), ...winM)
              : grey(linear(images.fixed.values, th, tv), ...winF);
          } else g = Math.round(0.6 * grey(linear(images.warped.values, th, tv), ...winM));
          put(c, r, [g, g, g]);
        }
      }
      const outline =
        name === 'grid' || name === 'difference' || name === 'checkerboard'
          ? null
          : labels[name as 'fixed' | 'moving' | 'warped'];
      if (outline) {
        const L = new Float32Array(w * h);
        for (let r = 0; r < h; r++)
          for (let c = 0; c < w; c++) L[r * w + c] = nearest(outline.values, ch[c]!, cv[r]!);
        for (let r = 0; r < h; r++) {
          for (let c = 0; c < w; c++) {
            const l = L[r * w + c]!;
            if (l === 0) continue;
            const edge =
              (c > 0 && L[r * w + c - 1] !== l) ||
              (c < w - 1 && L[r * w + c + 1] !== l) ||
              (r > 0 && L[(r - 1) * w + c] !== l) ||
              (r < h - 1 && L[(r + 1) * w + c] !== l);
            if (edge) put(c, r, labelColour(l));
          }
        }
      }
      if (name === 'grid' && field) {
        // iso-lines of the deformed in-plane coordinates x + u(x)
        const lh = new Float64Array(w * h);
        const lv = new Float64Array(w * h);
        for (let r = 0; r < h; r++) {
          for (let c = 0; c < w; c++) {
            const th = ch[c]!;
            const tv = cv[r]!;
            lh[r * w + c] = Math.floor((th + linear(field, th, tv, nd, view.h)) / gridSpacing);
            lv[r * w + c] = Math.floor((tv + linear(field, th, tv, nd, view.v)) / gridSpacing);
          }
        }
        for (let r = 0; r < h; r++) {
          for (let c = 0; c < w; c++) {
            const i = r * w + c;
            const line =
              (c > 0 && (lh[i - 1] !== lh[i] || lv[i - 1] !== lv[i])) ||
              (r > 0 && (lh[i - w] !== lh[i] || lv[i - w] !== lv[i]));
            if (line) put(c, r, GRID);
          }
        }
      }
      const title = TITLES[name]! + (col === 0 && view.name !== 'slice' ? ` · ${view.name}` : '');
      const scale = measureText(title, textScale).width <= S ? textScale : 1;
      drawText(image, title, cx, y0 + headerH - 4 - GLYPH_H * scale, { scale, colour: TEXT });
    });
  });
  let ty = M + rowsH + G;
  for (const line of caption) {
    drawText(image, line, M, ty + textScale, { scale: textScale, colour: TEXT });
    ty += lineH;
  }
  return image;
}

/**
 * Renders {@link renderRegistrationFigure} and writes it as a PNG (through a temporary file
 * renamed into place; Node.js only).
 *
 * @example
 * ```ts
 * await saveRegistrationFigure('figure.png', { fixed, moving, warped, field }, {
 *   figures: { similarity: 'lncc', foldingPercent: 0 },
 * });
 * ```
 */
export async function saveRegistrationFigure(
  path: string,
  inputs: RegistrationFigureInputs,
  opts: RegistrationFigureOptions & { overwrite?: boolean } = {},
): Promise<void> {
  const png = encodePng(await renderRegistrationFigure(inputs, opts));
  await writeFileAtomic(path, png, opts.overwrite ?? true);
}
