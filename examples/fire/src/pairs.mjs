/**
 * The pairs and the synthesis picture of examples/fire: slices of `@regkit/example-common` with
 * a random affine on the moving image on top of the independent B-spline deformations.
 */
import { affineField, mulberry32, tf, warp } from '@regkit/core';
import { bratsDataset, itkPairDataset, makePair } from '@regkit/example-common/slices';
import { encodePng, renderSlice } from '@regkit/io';
import { writeFileAtomic } from '@regkit/networks';

/** The tasks by key, slices resized to size × size (BraTS: null when the data are absent). */
export const DATASETS = (size) => ({
  itk: () => itkPairDataset([size, size]),
  brats: () => bratsDataset('t2f_flair', { size: [size, size] }),
});

/**
 * A random affine in centred voxel coordinates (core `affineField`): per-axis scale in
 * [1 − a, 1 + a], rotation in ±a·45°, shear in ±a/2, translation in ±a/2 of the extent.
 */
export function randomAffine(seed, spatial, a) {
  const r = mulberry32(seed);
  const u = () => 2 * r() - 1;
  const th = (u() * a * Math.PI) / 4;
  const [s0, s1] = [1 + a * u(), 1 + a * u()];
  const sh = (a / 2) * u();
  const c = Math.cos(th);
  const s = Math.sin(th);
  // R · [[s0, sh], [0, s1]]
  const m = [
    [c * s0, c * sh - s * s1],
    [s * s0, s * sh + c * s1],
  ];
  return [
    [
      [m[0][0], m[0][1], (a / 2) * u() * spatial[0]],
      [m[1][0], m[1][1], (a / 2) * u() * spatial[1]],
    ],
  ];
}

/**
 * The pair (slice z, seed) of makePair with the moving image and labels also moved by a random
 * affine of strength `affineStrength` (tensors the caller disposes).
 */
export function affinePair(dataset, z, seed, affineStrength) {
  const p = makePair(dataset, z, seed);
  return tf.tidy(() => {
    const field = affineField(
      randomAffine(seed + 7777, dataset.size, affineStrength),
      dataset.size,
    );
    const out = {
      ...p,
      moving: warp(p.moving, field),
      movingLabels: p.movingLabels
        ? warp(p.movingLabels, field, { interpolation: 'nearest' })
        : null,
    };
    tf.dispose([p.moving, p.movingLabels].filter(Boolean));
    return out;
  });
}

/** The trainer's `data(epoch, step)`: a training slice, a fresh affine + deformation seed. */
export function trainingData(dataset, affineStrength, stepsPerEpoch) {
  return (epoch, step) => {
    const i = epoch * stepsPerEpoch + step;
    const z = dataset.train[(i * 7919) % dataset.train.length];
    const p = affinePair(dataset, z, i, affineStrength);
    tf.dispose([p.movingTruth, p.movingLabels, p.fixedLabels].filter(Boolean));
    return { moving: p.moving, fixed: p.fixed };
  };
}

/** Held-out pairs: test slices × `deformations` seeds disjoint from training's. */
export function testPairs(dataset, deformations, affineStrength) {
  const out = [];
  for (const z of dataset.test)
    for (let r = 0; r < deformations; r++)
      out.push(affinePair(dataset, z, 100_000 + 10 * z + r, affineStrength));
  return out;
}

/**
 * x^A | F^{A→B}(G(x^A)) | x^B side by side (grey levels [0, 1], the synthesis's tanh range
 * [−1, 1] mapped the same way), each pixel drawn as a `zoom`×`zoom` block, as one PNG.
 */
export async function synthesisPng(path, model, pair, zoom = 3) {
  const synth = model.synthesise(pair.moving, 'AB');
  const images = [];
  for (const t of [pair.moving, synth, pair.fixed]) {
    images.push(await renderSlice(t, { window: [0, 1] }));
  }
  synth.dispose();
  const h = images[0].height;
  const w = images.reduce((s, im) => s + im.width, 0);
  const data = new Uint8Array(w * h * zoom * zoom * 4);
  let x0 = 0;
  for (const im of images) {
    for (let y = 0; y < h * zoom; y++) {
      for (let x = 0; x < im.width * zoom; x++) {
        const from = (Math.floor(y / zoom) * im.width + Math.floor(x / zoom)) * 4;
        data.set(im.data.subarray(from, from + 4), (y * w * zoom + x0 + x) * 4);
      }
    }
    x0 += im.width * zoom;
  }
  await writeFileAtomic(path, encodePng({ width: w * zoom, height: h * zoom, data }));
}

/**
 * A large random affine in centred voxel coordinates (core `affineField`, sampling convention
 * warped(x) = moving(A (x − c) + c + t)), after the paper's "moderate-to-strong (20–50 %
 * change across at least one dimension)": strength a uniform in [aMin, aMax]; one axis (drawn)
 * scaled by (1 + a)^{±1} (sign drawn: shrink or stretch by 20–50 %), the other by
 * 1 ± 0.1; rotation within ±15°; shear within ±0.05; translation within ±10 % of the extent.
 */
export function largeAffine(seed, spatial, aMin = 0.2, aMax = 0.5) {
  const r = mulberry32(seed);
  const u = () => 2 * r() - 1;
  const a = aMin + (aMax - aMin) * r();
  const big = (1 + a) ** (r() < 0.5 ? -1 : 1);
  const small = 1 + 0.1 * u();
  const [s0, s1] = r() < 0.5 ? [big, small] : [small, big];
  const th = (u() * 15 * Math.PI) / 180;
  const sh = 0.05 * u();
  const c = Math.cos(th);
  const s = Math.sin(th);
  const m = [
    [c * s0, c * sh - s * s1],
    [s * s0, s * sh + c * s1],
  ];
  return [
    [
      [m[0][0], m[0][1], 0.1 * u() * spatial[0]],
      [m[1][0], m[1][1], 0.1 * u() * spatial[1]],
    ],
  ];
}

/**
 * The protocol's pair (slice z, seed): makePair's independent B-spline deformations of both
 * slices (|u| ≤ 4 voxels, 16-voxel control spacing) and a {@link largeAffine} of strength
 * in [aMin, aMax] on the moving image and labels (tensors the caller disposes).
 */
export function largeAffinePair(dataset, z, seed, aMin = 0.2, aMax = 0.5) {
  const p = makePair(dataset, z, seed);
  return tf.tidy(() => {
    const field = affineField(largeAffine(seed + 7777, dataset.size, aMin, aMax), dataset.size);
    const out = {
      ...p,
      moving: warp(p.moving, field),
      movingLabels: p.movingLabels
        ? warp(p.movingLabels, field, { interpolation: 'nearest' })
        : null,
    };
    tf.dispose([p.moving, p.movingLabels].filter(Boolean));
    return out;
  });
}
