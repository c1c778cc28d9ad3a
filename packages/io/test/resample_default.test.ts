/**
 * resampleToReference's `defaultValue` (ANTs --default-value) and the background rule
 * (`backgroundValue`): CT-like images get their air value outside, MRI-like images 0, explicit
 * numbers and NaN, partial-volume blending at the edge, and no leaks.
 */
import { initBackend, tf } from '@regkit/core';
import { backgroundValue, RegkitIOError, resampleToReference, type Volume } from '@regkit/io';
import { beforeAll, describe, expect, it } from 'vitest';
import { makeAffine } from './helpers.js';

beforeAll(async () => {
  expect(await initBackend('cpu')).toBe('cpu');
});

const ID = makeAffine(
  [
    [1, 0, 0],
    [0, 1, 0],
    [0, 0, 1],
  ],
  [0, 0, 0],
);
/** The reference grid shifted by 3 voxels along x: its last 3 x-columns fall outside. */
const SHIFTED = makeAffine(
  [
    [1, 0, 0],
    [0, 1, 0],
    [0, 0, 1],
  ],
  [3, 0, 0],
);

/** 8×6×5 volume: `outside` on the outer faces, `inside` + i inside. */
function phantom(outside: number, inside: number, affine = ID): Volume {
  const [nx, ny, nz] = [8, 6, 5];
  const v = new Float32Array(nx * ny * nz);
  for (let i = 0; i < nx; i++)
    for (let j = 0; j < ny; j++)
      for (let k = 0; k < nz; k++) {
        const border =
          i === 0 || j === 0 || k === 0 || i === nx - 1 || j === ny - 1 || k === nz - 1;
        v[(i * ny + j) * nz + k] = border ? outside : inside + i;
      }
  return {
    data: tf.tensor(v, [1, nx, ny, nz, 1]),
    affine,
    spacing: [1, 1, 1],
    header: undefined as unknown as Volume['header'],
  };
}

/** Values at x index `i` of a [1, nx, ny, nz, 1] result. */
async function column(t: tf.Tensor, i: number): Promise<number[]> {
  const [, , ny, nz] = t.shape as number[];
  const v = await t.data();
  const out: number[] = [];
  for (let j = 0; j < ny!; j++) for (let k = 0; k < nz!; k++) out.push(v[(i * ny! + j) * nz! + k]!);
  return out;
}

describe('backgroundValue', () => {
  it('0 for MRI-like images, the minimum for CT-like and all-positive ones', () => {
    const cases: Array<[Volume, number]> = [
      [phantom(0, 100), 0], // MRI: background 0
      [phantom(-1024, 0), -1024], // CT: air −1024 on the border, 0 (water) inside the range
      [phantom(-3024, -1000), -3024], // CT outside the scan
      [phantom(100, 200), 100], // 0 below the range
      [phantom(-50, -200), -199], // 0 above the range (all negative): the minimum, −200 + 1
    ];
    for (const [vol, want] of cases) {
      expect(backgroundValue(vol)).toBe(want);
      vol.data.dispose();
    }
    // a signed map whose minimum is not its background (e.g. a t-map with 0 around it): 0
    const t = phantom(0, -3);
    expect(backgroundValue(t)).toBe(0);
    t.data.dispose();
    // NaN/Inf are ignored; no finite value at all → 0
    const nan: Volume = {
      ...phantom(0, 0),
      data: tf.tensor([Number.NaN, 5, 7, Infinity], [1, 2, 2, 1]),
    };
    expect(backgroundValue(nan)).toBe(5);
    nan.data.dispose();
    const none: Volume = { ...phantom(0, 0), data: tf.fill([1, 2, 2, 1], Number.NaN) };
    expect(backgroundValue(none)).toBe(0);
    none.data.dispose();
  });
});

describe('resampleToReference defaultValue', () => {
  it('default: a CT phantom is padded with its air value, not 0 (water)', async () => {
    const ct = phantom(-1024, 0);
    const ref = phantom(0, 0, SHIFTED);
    const out = resampleToReference(ct, ref);
    // reference x index 5 → moving x 8: outside
    expect(new Set(await column(out.data, 5))).toEqual(new Set([-1024]));
    expect(new Set(await column(out.data, 7))).toEqual(new Set([-1024]));
    // reference x 0 → moving x 3, an inner voxel (j = 1, k = 2) holds inside + i = 0 + 3
    const inside = await column(out.data, 0);
    expect(inside[7]).toBe(3);
    tf.dispose([ct.data, ref.data, out.data]);
  });

  it('default for MRI stays 0; explicit numbers and NaN; linear blends at the edge', async () => {
    const mri = phantom(0, 100);
    const ref = phantom(0, 0, SHIFTED);
    const zero = resampleToReference(mri, ref);
    expect(new Set(await column(zero.data, 6))).toEqual(new Set([0]));
    const five = resampleToReference(mri, ref, { defaultValue: 5 });
    expect(new Set(await column(five.data, 6))).toEqual(new Set([5]));
    const nan = resampleToReference(mri, ref, { defaultValue: Number.NaN });
    expect((await column(nan.data, 6)).every(Number.isNaN)).toBe(true);
    expect((await column(nan.data, 3)).some(Number.isNaN)).toBe(false);
    // half a voxel beyond the last column: linear interpolation blends 50/50 with the default
    const half = phantom(
      0,
      0,
      makeAffine(
        [
          [1, 0, 0],
          [0, 1, 0],
          [0, 0, 1],
        ],
        [7.5, 0, 0],
      ),
    );
    const b = resampleToReference(mri, half, { defaultValue: 40 });
    const col = await column(b.data, 0); // moving x 7.5: border voxel 0 and outside 40
    expect(col.every((v) => Math.abs(v - 20) < 1e-4)).toBe(true);
    const nearest = resampleToReference(mri, ref, { defaultValue: -7, interpolation: 'nearest' });
    expect(new Set(await column(nearest.data, 7))).toEqual(new Set([-7]));
    tf.dispose([
      mri.data,
      ref.data,
      zero.data,
      five.data,
      nan.data,
      half.data,
      b.data,
      nearest.data,
    ]);
  });

  it('padding border ignores the default; an explicit defaultValue with border is refused', async () => {
    const ct = phantom(-1024, 0);
    const ref = phantom(0, 0, SHIFTED);
    const border = resampleToReference(ct, ref, { padding: 'border' });
    expect(new Set(await column(border.data, 7))).toEqual(new Set([-1024]));
    expect(() => resampleToReference(ct, ref, { padding: 'border', defaultValue: 3 })).toThrow(
      RegkitIOError,
    );
    expect(() =>
      resampleToReference(ct, ref, { defaultValue: 'min' as unknown as number }),
    ).toThrow(/'defaultValue' must be a number or 'background'/);
    const before = tf.memory().numTensors;
    for (const dv of [undefined, 3, Number.NaN]) {
      resampleToReference(ct, ref, { defaultValue: dv }).data.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([ct.data, ref.data, border.data]);
  });
});
