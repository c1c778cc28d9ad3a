/**
 * renderRegistrationFigure / drawText: panel layout (positions, sizes, ≥ 512 px wide), the
 * upscaling (bilinear intensities, nearest labels), label outlines where the label
 * boundaries are, deformed-grid lines where x + u(x) crosses the grid, the 5×7 font, the
 * caption, determinism, and the PNG read back by an independent decoder (Python).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, tf } from '@regkit/core';
import {
  drawText,
  encodePng,
  FIGURE_GAP_PX,
  FIGURE_MARGIN_PX,
  figureCaption,
  labelColour,
  measureText,
  type RegistrationFigure,
  type RGBAImage,
  renderRegistrationFigure,
  saveRegistrationFigure,
} from '@regkit/io';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';

const tmp = tempDir();
beforeAll(async () => {
  expect(await initBackend('cpu')).toBe('cpu');
});
afterAll(() => tmp.cleanup());

const M = FIGURE_MARGIN_PX;
const G = FIGURE_GAP_PX;
/** Title strip height at the default textScale 2: 9·2 + 8. */
const HEADER = 26;
const YELLOW = [255, 210, 0];

const px = (img: RGBAImage, col: number, row: number) =>
  Array.from(img.data.subarray(4 * (row * img.width + col), 4 * (row * img.width + col) + 3));

/** The pixels of one panel, as a function of panel-local (col, row). */
function panel(fig: RegistrationFigure, name: string, view?: string) {
  const p = fig.panels.find((q) => q.name === name && (view === undefined || q.view === view));
  if (!p) throw new Error(`no panel ${name}`);
  return { ...p, at: (c: number, r: number) => px(fig, p.x + c, p.y + r) };
}

/** [1, ...shape, 1] from a function of the voxel index. */
function image(shape: number[], f: (i: number[]) => number): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  for (let k = 0; k < n; k++) {
    const idx: number[] = [];
    let r = k;
    for (let a = shape.length - 1; a >= 0; a--) {
      idx.unshift(r % shape[a]!);
      r = Math.floor(r / shape[a]!);
    }
    v[k] = f(idx);
  }
  return tf.tensor(v, [1, ...shape, 1]);
}

describe('drawText (embedded 5×7 font)', () => {
  const blank = (w: number, h: number): RGBAImage => ({
    width: w,
    height: h,
    data: new Uint8Array(w * h * 4),
  });
  const lit = (img: RGBAImage) => {
    let n = 0;
    let [x0, y0, x1, y1] = [Infinity, Infinity, -1, -1];
    for (let y = 0; y < img.height; y++) {
      for (let x = 0; x < img.width; x++) {
        if (img.data[4 * (y * img.width + x)]! > 0) {
          n++;
          x0 = Math.min(x0, x);
          y0 = Math.min(y0, y);
          x1 = Math.max(x1, x);
          y1 = Math.max(y1, y);
        }
      }
    }
    return { n, box: [x0, y0, x1, y1] };
  };

  it("'I1' at scale 1: 11 + 10 pixels in columns 1..9, rows 0..6 (counted by hand)", () => {
    const img = blank(20, 12);
    expect(drawText(img, 'I1', 0, 0)).toBe(11);
    expect(lit(img)).toEqual({ n: 21, box: [1, 0, 9, 6] });
  });

  it("'I1' at scale 3: 9× the pixels, box scaled; measureText agrees", () => {
    const img = blank(40, 30);
    drawText(img, 'I1', 0, 0, { scale: 3, colour: [10, 20, 30] });
    expect(lit(img)).toEqual({ n: 189, box: [3, 0, 29, 20] });
    expect(px(img, 3, 0)).toEqual([10, 20, 30]);
    expect(measureText('I1', 3)).toEqual({ width: 33, height: 27 });
    expect(measureText('', 2).width).toBe(0);
  });

  it("descenders: 'g' has 18 pixels in rows 2..8; unknown characters draw '?'", () => {
    const g = blank(8, 10);
    drawText(g, 'g', 0, 0);
    expect(lit(g)).toEqual({ n: 18, box: [0, 2, 4, 8] });
    const a = blank(8, 10);
    const b = blank(8, 10);
    drawText(a, 'ζ', 0, 0);
    drawText(b, '?', 0, 0);
    expect(a.data).toEqual(b.data);
    expect(lit(a).n).toBe(3 + 2 + 1 + 1 + 1 + 0 + 1);
  });

  it('clips at the image edges and rejects a non-integer scale', () => {
    const img = blank(3, 3);
    drawText(img, 'I1', -2, -1);
    expect(lit(img).n).toBeGreaterThan(0);
    expect(() => drawText(img, 'a', 0, 0, { scale: 1.5 })).toThrow(/scale/);
  });
});

describe('renderRegistrationFigure', () => {
  it('2D layout: one row of five panels (six with a field), 192 px cells, ≥ 512 px wide', async () => {
    const f = image([32, 32], ([i, j]) => i! + j!);
    const fig = await renderRegistrationFigure({ fixed: f, moving: f, warped: f });
    expect(fig.panels.map((p) => p.name)).toEqual([
      'fixed',
      'moving',
      'warped',
      'difference',
      'checkerboard',
    ]);
    expect(fig.width).toBe(2 * M + 5 * 192 + 4 * G);
    fig.panels.forEach((p, i) => {
      expect([p.x, p.y, p.width, p.height, p.view]).toEqual([
        M + i * (192 + G),
        M + HEADER,
        192,
        192,
        'slice',
      ]);
    });
    expect(fig.height).toBe(M + HEADER + 192 + M);
    const u = tf.zeros([1, 32, 32, 2]);
    const six = await renderRegistrationFigure({ fixed: f, moving: f, warped: f, field: u });
    expect(six.panels.at(-1)!.name).toBe('grid');
    expect(six.width).toBe(2 * M + 6 * 192 + 5 * G);
    // small cells are widened so the figure is at least 512 px wide
    const small = await renderRegistrationFigure(
      { fixed: f, moving: f, warped: f, field: u },
      { panelSize: 16 },
    );
    expect(small.width).toBeGreaterThanOrEqual(512);
    expect(small.panels[0]!.width).toBe(Math.ceil((512 - 2 * M - 5 * G) / 6));
    tf.dispose([f, u]);
  });

  it('3D: axial, coronal and sagittal rows, physical aspect ratio, centred in their cells', async () => {
    // spatial [20, 10, 5] with 1 mm voxels: axial 20 (R) × 10 (A), coronal 20 × 5, sagittal 10 × 5
    const f = image([20, 10, 5], ([i]) => i!);
    const fig = await renderRegistrationFigure({ fixed: f, moving: f, warped: f });
    const S = 192;
    const rows = ['axial', 'coronal', 'sagittal'];
    const sizes = [
      [192, 96],
      [192, 48],
      [192, 96],
    ];
    rows.forEach((view, row) => {
      const p = panel(fig, 'warped', view);
      const [w, h] = sizes[row]!;
      expect([p.width, p.height]).toEqual([w, h]);
      expect(p.x).toBe(M + 2 * (S + G) + Math.floor((S - w!) / 2));
      expect(p.y).toBe(M + row * (HEADER + S + G) + HEADER + Math.floor((S - h!) / 2));
      expect(p.axis).toBe([2, 1, 0][row]);
      expect(p.index).toBe([2, 5, 10][row]);
    });
    expect(fig.height).toBe(M + 3 * (HEADER + S) + 2 * G + M);
    // the cell outside the slice is black, the figure background is not
    const sag = panel(fig, 'fixed', 'sagittal');
    expect(px(fig, sag.x + 5, sag.y - 3)).toEqual([0, 0, 0]);
    expect(px(fig, 2, 2)).toEqual([24, 24, 24]);
    // the sagittal cut is voxel column i = 10: one grey level everywhere in it
    expect(new Set(Array.from({ length: 50 }, (_, k) => sag.at(k * 3, k)[0])).size).toBe(1);
    f.dispose();
  });

  it('intensities are upscaled smoothly (bilinear), left = low index, window 1st–99th percentile', async () => {
    const f = image([32, 32], ([i]) => i!);
    const fig = await renderRegistrationFigure({ fixed: f, moving: f, warped: f });
    const p = panel(fig, 'fixed');
    const row = Array.from({ length: p.width }, (_, c) => p.at(c, 50)[0]!);
    // 32 voxels over 192 pixels: far more than 32 grey levels, never decreasing
    expect(new Set(row).size).toBeGreaterThan(100);
    for (let c = 1; c < row.length; c++) expect(row[c]!).toBeGreaterThanOrEqual(row[c - 1]!);
    // the window [p1, p99] of 0..31, each 32 times, is [0, 31]; pixel 100 lies at voxel
    // coordinate 100.5 · 32/192 − 0.5 = 16.25 → grey round(255 · 16.25/31) = 134
    expect(row[100]).toBe(134);
    // identical images: a black |difference|
    const d = panel(fig, 'difference');
    expect(d.at(100, 100)).toEqual([0, 0, 0]);
    f.dispose();
  });

  it('label outlines lie on the label boundaries (nearest upscaling: 6 px per voxel)', async () => {
    const zero = image([32, 32], () => 0);
    // label 3 on voxels [8, 16) × [8, 16): pixels columns 48..95; rows (j up) 96..143
    const labels = image([32, 32], ([i, j]) => (i! >= 8 && i! < 16 && j! >= 8 && j! < 16 ? 3 : 0));
    const fig = await renderRegistrationFigure({
      fixed: zero,
      moving: zero,
      warped: zero,
      fixedLabels: labels,
    });
    const p = panel(fig, 'fixed');
    const colour = labelColour(3);
    let count = 0;
    for (let r = 0; r < p.height; r++) {
      for (let c = 0; c < p.width; c++) {
        const on = p.at(c, r).every((v, k) => v === colour[k]);
        const inside = c >= 48 && c <= 95 && r >= 96 && r <= 143;
        const border = inside && (c === 48 || c === 95 || r === 96 || r === 143);
        expect(on, `pixel (${c}, ${r})`).toBe(border);
        if (on) count++;
      }
    }
    expect(count).toBe(4 * 48 - 4);
    // no labels given for moving/warped: no outline there
    expect(panel(fig, 'warped').at(48, 100)).toEqual([0, 0, 0]);
    tf.dispose([zero, labels]);
  });

  it('deformed grid: lines where x + u(x) crosses multiples of gridSpacing (zero and shifted fields)', async () => {
    const f = image([64, 64], () => 0);
    const zero = tf.zeros([1, 64, 64, 2]);
    const yellow = (fig: RegistrationFigure) => {
      const p = panel(fig, 'grid');
      const cols = new Set<number>();
      const rows = new Set<number>();
      let n = 0;
      for (let r = 0; r < p.height; r++) {
        for (let c = 0; c < p.width; c++) {
          if (p.at(c, r).every((v, k) => v === YELLOW[k])) n++;
        }
      }
      for (let c = 0; c < p.width; c++)
        if (p.at(c, 5).every((v, k) => v === YELLOW[k])) cols.add(c);
      for (let r = 0; r < p.height; r++)
        if (p.at(5, r).every((v, k) => v === YELLOW[k])) rows.add(r);
      return { n, cols: [...cols], rows: [...rows] };
    };
    const opts = { panelSize: 256, gridSpacing: 8 };
    const a = yellow(
      await renderRegistrationFigure({ fixed: f, moving: f, warped: f, field: zero }, opts),
    );
    // pixel c ↦ voxel (c + 0.5)/4 − 0.5 reaches 8k at c = 32k + 2; rows: j = 63.375 − r/4
    // drops below 8k at r = 254 − 32k
    const k7 = [1, 2, 3, 4, 5, 6, 7];
    expect(a.cols).toEqual(k7.map((k) => 32 * k + 2));
    expect(a.rows).toEqual(k7.map((k) => 254 - 32 * k).reverse());
    expect(a.n).toBe(2 * 7 * 256 - 49);
    // u = +2 voxels along axis 0: i + 2 reaches 8k two voxels (8 px) earlier, at c = 32k − 6
    const shift = tf.tidy(() =>
      tf.concat([tf.fill([1, 64, 64, 1], 2), tf.zeros([1, 64, 64, 1])], -1),
    );
    const b = yellow(
      await renderRegistrationFigure({ fixed: f, moving: f, warped: f, field: shift }, opts),
    );
    expect(b.cols).toEqual([1, 2, 3, 4, 5, 6, 7, 8].map((k) => 32 * k - 6));
    expect(b.rows).toEqual(a.rows);
    tf.dispose([f, zero, shift]);
  });

  it('|difference|: black for a global linear intensity change, bright where the images differ; inputs untouched', async () => {
    const f = image([32, 32], ([i, j]) => Math.sin(i! / 4) * Math.cos(j! / 5));
    const w = tf.tidy(() => tf.add(tf.mul(f, 3), 7));
    const labels = image([32, 32], ([i]) => (i! > 16 ? 2.4 : 0));
    const fig = await renderRegistrationFigure({
      fixed: f,
      moving: f,
      warped: w,
      fixedLabels: labels,
    });
    const d = panel(fig, 'difference');
    let max = 0;
    for (let r = 0; r < d.height; r++)
      for (let c = 0; c < d.width; c++) max = Math.max(max, d.at(c, r)[0]!);
    expect(max).toBeLessThanOrEqual(1);
    // the label values read are rounded in a copy, not in the tensor
    expect(Array.from(await labels.data()).filter((v) => v === Math.fround(2.4)).length).toBe(
      15 * 32,
    );
    // halves 0 | 1 (window [0, 1] for both); warped also 1 on the square [0, 8)²: |difference|
    // 1 there (6 % of the voxels: the 99th percentile, white) and 0 elsewhere
    const half = image([32, 32], ([i]) => (i! >= 16 ? 1 : 0));
    const moved = image([32, 32], ([i, j]) => (i! >= 16 || (i! < 8 && j! < 8) ? 1 : 0));
    const g = await renderRegistrationFigure({ fixed: half, moving: moved, warped: moved });
    // voxel (2.08, 2.08) is near the bottom-left: pixel column 15, row 176
    expect(panel(g, 'difference').at(15, 176)).toEqual([255, 255, 255]);
    expect(panel(g, 'difference').at(150, 40)).toEqual([0, 0, 0]);
    expect(panel(g, 'difference').at(15, 40)).toEqual([0, 0, 0]);
    tf.dispose([f, w, labels, half, moved]);
  });

  it('checkerboard alternates fixed and warped tiles', async () => {
    const lo = image([16, 16], () => 0);
    const hi = image([16, 16], ([i]) => 10 + i!);
    const fig = await renderRegistrationFigure({ fixed: lo, moving: hi, warped: hi }, { tiles: 4 });
    const p = panel(fig, 'checkerboard');
    // tile (0, 0) fixed (black), tile (1, 0) warped (not black)
    expect(p.at(10, 10)).toEqual([0, 0, 0]);
    expect(p.at(48 + 10, 10)[0]).toBeGreaterThan(0);
    expect(p.at(48 + 10, 48 + 10)).toEqual([0, 0, 0]);
    tf.dispose([lo, hi]);
  });

  it('caption: the figures as text lines, drawn below the panels', async () => {
    const lines = figureCaption({
      title: 'demo',
      figures: {
        similarity: 'lncc',
        similarityBefore: -0.25,
        similarityAfter: -0.5,
        diceBefore: 0.5,
        diceAfter: 0.81234,
        labels: 3,
        foldingPercent: 0.0123,
        seconds: 12.34,
      },
      notes: ['a note'],
    });
    expect(lines).toEqual([
      'demo',
      'similarity lncc: -0.2500 → -0.5000 (before → after)',
      'mean Dice over 3 labels: 0.500 → 0.812 (before → after)',
      'folding: 0.012 % of voxels with det(I + grad u) ≤ 0',
      'time: 12.3 s',
      'a note',
    ]);
    const f = image([16, 16], ([i]) => i!);
    const fig = await renderRegistrationFigure(
      { fixed: f, moving: f, warped: f },
      { figures: { diceAfter: 0.9 }, notes: ['x'.repeat(200)] },
    );
    // 'mean Dice: 0.900' and 200 x wrapped to lines of 82 characters (1008 px wide): 4 lines
    expect(fig.height).toBe(M + HEADER + 192 + G + 4 * 22 + M);
    const captionTop = M + HEADER + 192 + G;
    let text = 0;
    for (let y = captionTop; y < fig.height; y++) {
      for (let x = 0; x < fig.width; x++) if (px(fig, x, y)[0] === 235) text++;
    }
    expect(text).toBeGreaterThan(200 * 4 * 4);
    f.dispose();
  });

  it('deterministic: the same inputs give the same bytes; another input changes them', async () => {
    const f = image([24, 20, 16], ([i, j, k]) => Math.sin(i! / 3) + j! * 0.1 + k! * 0.05);
    const m = image([24, 20, 16], ([i, j]) => Math.cos(j! / 4) + i! * 0.1);
    const l = image([24, 20, 16], ([i, j]) => (i! > 10 ? 1 : j! > 8 ? 2 : 0));
    const u = tf.tidy(() => tf.mul(tf.randomUniform([1, 24, 20, 16, 3], -1, 1, 'float32', 5), 2));
    const inputs = { fixed: f, moving: m, warped: m, field: u, fixedLabels: l, warpedLabels: l };
    const before = tf.memory().numTensors;
    const a = encodePng(await renderRegistrationFigure(inputs, { title: 'same' }));
    const b = encodePng(await renderRegistrationFigure(inputs, { title: 'same' }));
    expect(tf.memory().numTensors).toBe(before);
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    const c = encodePng(
      await renderRegistrationFigure({ ...inputs, warped: f }, { title: 'same' }),
    );
    expect(Buffer.from(a).equals(Buffer.from(c))).toBe(false);
    tf.dispose([f, m, l, u]);
  });

  it('bad input: shapes and options named in the error', async () => {
    const f = image([8, 8], () => 1);
    const g = image([8, 9], () => 1);
    await expect(renderRegistrationFigure({ fixed: f, moving: g, warped: f })).rejects.toThrow(
      /'moving' \[1, 8, 9, 1\] must be \[1, 8, 8, C\]/,
    );
    const u3 = tf.zeros([1, 8, 8, 3]);
    await expect(
      renderRegistrationFigure({ fixed: f, moving: f, warped: f, field: u3 }),
    ).rejects.toThrow(/'field'/);
    await expect(
      renderRegistrationFigure({ fixed: f, moving: f, warped: f }, { tiles: 0 }),
    ).rejects.toThrow(/'tiles'/);
    tf.dispose([f, g, u3]);
  });
});

const PYTHON = '/usr/bin/python3';
const DECODER = fileURLToPath(new URL('./fixtures/png_decode.py', import.meta.url));

describe.skipIf(!existsSync(PYTHON))(
  'the PNG read back by an independent decoder (Python zlib + struct, Pillow)',
  () => {
    it('same size and RGBA pixels', async () => {
      const f = image([20, 24, 12], ([i, j, k]) => i! + 0.5 * j! + k!);
      const u = tf.tidy(() =>
        tf.mul(tf.randomUniform([1, 20, 24, 12, 3], -1, 1, 'float32', 3), 1.5),
      );
      const inputs = { fixed: f, moving: f, warped: f, field: u };
      const opts = { title: 'decoded by Python' };
      const path = join(tmp.dir, 'figure.png');
      await saveRegistrationFigure(path, inputs, opts);
      const fig = await renderRegistrationFigure(inputs, opts);
      const out = JSON.parse(execFileSync(PYTHON, [DECODER, path], { encoding: 'utf8' })) as {
        width: number;
        height: number;
        sha256: string;
        pillowAgrees: boolean | null;
      };
      expect([out.width, out.height]).toEqual([fig.width, fig.height]);
      expect(out.sha256).toBe(createHash('sha256').update(fig.data).digest('hex'));
      if (out.pillowAgrees === null)
        console.log('Pillow not importable: checked with zlib + struct only');
      else expect(out.pillowAgrees).toBe(true);
      tf.dispose([f, u]);
    });
  },
);
