/**
 * Plain-JavaScript `RegkitWarp` / `RegkitWarpGrad` (/ `RegkitWarpImageGrad`, `RegkitWarpFieldGrad`) kernels for the cpu and wasm
 * backends: one pass over the output voxels, 2^ndim corners each, no temporaries.
 * Same contract as the portable composite in `sample.ts` (torch `grid_sample`,
 * `align_corners=True`); 2D runs as 3D with a depth of 1.
 */
import { type KernelBackendLike, runFloatKernel } from './backend_io.js';
import type { RegkitWarpAttrs, RegkitWarpGradInputs, RegkitWarpInputs } from './kernel_names.js';
import type { tf } from './tf.js';

interface Dims {
  nd: number;
  batch: number;
  channels: number;
  /** image spatial as [D, H, W] (D = 1 in 2D) */
  s: [number, number, number];
  /** output spatial as [D, H, W] */
  o: [number, number, number];
}

function dims(image: tf.TensorInfo, field: tf.TensorInfo): Dims {
  const nd = field.shape.length - 2;
  const sp = image.shape.slice(1, 1 + nd);
  const op = field.shape.slice(1, 1 + nd);
  const to3 = (a: number[]) =>
    (nd === 3 ? [a[0]!, a[1]!, a[2]!] : [1, a[0]!, a[1]!]) as [number, number, number];
  return {
    nd,
    batch: image.shape[0]!,
    channels: image.shape[image.shape.length - 1]!,
    s: to3(sp),
    o: to3(op),
  };
}

/** Round half to even (torch `nearbyint`, tf.round). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Flat voxel index (without channels) read by nearest sampling at (pz, py, px) of batch item
 * `b`, or −1 when the sample is outside the image with zeros padding. Border padding clamps
 * the position first (then rounds half to even).
 */
function nearestVoxel(
  d: Dims,
  b: number,
  pz: number,
  py: number,
  px: number,
  border: boolean,
): number {
  const [D, H, W] = d.s;
  const pick = (p: number, n: number) =>
    roundHalfEven(border ? Math.min(Math.max(p, 0), n - 1) : p);
  const iz = pick(pz, D);
  const iy = pick(py, H);
  const ix = pick(px, W);
  if (iz < 0 || iz > D - 1 || iy < 0 || iy > H - 1 || ix < 0 || ix > W - 1) return -1;
  return ((b * D + iz) * H + iy) * W + ix;
}

/**
 * Visits every output voxel with its sample position (pz, py, px) in image voxels and
 * the flat output index `o`.
 */
function forEachSample(
  d: Dims,
  field: Float32Array,
  visit: (b: number, o: number, pz: number, py: number, px: number) => void,
): void {
  const [Do, Ho, Wo] = d.o;
  const nd = d.nd;
  let o = 0;
  for (let b = 0; b < d.batch; b++) {
    for (let z = 0; z < Do; z++) {
      for (let y = 0; y < Ho; y++) {
        for (let x = 0; x < Wo; x++, o++) {
          const f = o * nd;
          const pz = nd === 3 ? z + field[f]! : 0;
          const py = y + field[f + nd - 2]!;
          const px = x + field[f + nd - 1]!;
          visit(b, o, pz, py, px);
        }
      }
    }
  }
}

interface Axis {
  /** lower corner index, its weight and the upper one's (validity included) */
  i0: number;
  w0: number;
  w1: number;
  /** derivative of w0 and w1 with respect to the position (validity and clamping included) */
  d0: number;
  d1: number;
  /** corner validity (zeros padding) */
  v0: boolean;
  v1: boolean;
}

function axis(p: number, size: number, border: boolean, out: Axis): void {
  let inRange = 1;
  if (border) {
    if (p < 0 || p > size - 1) inRange = 0;
    p = p < 0 ? 0 : Math.min(p, size - 1);
  }
  const f = Math.floor(p);
  const t = p - f;
  const v0 = f >= 0 && f <= size - 1;
  const v1 = f + 1 >= 0 && f + 1 <= size - 1;
  out.i0 = f;
  out.v0 = v0;
  out.v1 = v1;
  out.w0 = v0 ? 1 - t : 0;
  out.w1 = v1 ? t : 0;
  out.d0 = v0 ? -inRange : 0;
  out.d1 = v1 ? inRange : 0;
}

function warpForward(
  d: Dims,
  image: Float32Array,
  field: Float32Array,
  attrs: RegkitWarpAttrs,
  out: Float32Array,
): void {
  const [D, H, W] = d.s;
  const C = d.channels;
  const border = attrs.padding === 'border';
  if (attrs.interpolation === 'nearest') {
    forEachSample(d, field, (b, o, pz, py, px) => {
      const src = nearestVoxel(d, b, pz, py, px, border);
      if (src < 0) return;
      for (let c = 0; c < C; c++) out[o * C + c] = image[src * C + c]!;
    });
    return;
  }
  const az = {} as Axis;
  const ay = {} as Axis;
  const ax = {} as Axis;
  forEachSample(d, field, (b, o, pz, py, px) => {
    axis(pz, D, border, az);
    axis(py, H, border, ay);
    axis(px, W, border, ax);
    for (let cz = 0; cz < 2; cz++) {
      const wz = cz ? az.w1 : az.w0;
      if (wz === 0) continue;
      const zi = az.i0 + cz;
      for (let cy = 0; cy < 2; cy++) {
        const wzy = wz * (cy ? ay.w1 : ay.w0);
        if (wzy === 0) continue;
        const yi = ay.i0 + cy;
        for (let cx = 0; cx < 2; cx++) {
          const w = wzy * (cx ? ax.w1 : ax.w0);
          if (w === 0) continue;
          const src = (((b * D + zi) * H + yi) * W + ax.i0 + cx) * C;
          for (let c = 0; c < C; c++) out[o * C + c]! += w * image[src + c]!;
        }
      }
    }
  });
}

function warpBackward(
  d: Dims,
  dy: Float32Array,
  image: Float32Array,
  field: Float32Array,
  attrs: RegkitWarpAttrs,
  dImage: Float32Array,
  dField: Float32Array,
): void {
  const [D, H, W] = d.s;
  const C = d.channels;
  const nd = d.nd;
  const border = attrs.padding === 'border';
  if (attrs.interpolation === 'nearest') {
    forEachSample(d, field, (b, o, pz, py, px) => {
      const dst = nearestVoxel(d, b, pz, py, px, border);
      if (dst < 0) return;
      for (let c = 0; c < C; c++) dImage[dst * C + c]! += dy[o * C + c]!;
    });
    return; // the field gradient of nearest sampling is zero
  }
  const az = {} as Axis;
  const ay = {} as Axis;
  const ax = {} as Axis;
  forEachSample(d, field, (b, o, pz, py, px) => {
    axis(pz, D, border, az);
    axis(py, H, border, ay);
    axis(px, W, border, ax);
    let gz = 0;
    let gy = 0;
    let gx = 0;
    for (let cz = 0; cz < 2; cz++) {
      if (!(cz ? az.v1 : az.v0)) continue;
      const wz = cz ? az.w1 : az.w0;
      const dz = cz ? az.d1 : az.d0;
      const zi = az.i0 + cz;
      for (let cy = 0; cy < 2; cy++) {
        if (!(cy ? ay.v1 : ay.v0)) continue;
        const wy = cy ? ay.w1 : ay.w0;
        const dyw = cy ? ay.d1 : ay.d0;
        const yi = ay.i0 + cy;
        for (let cx = 0; cx < 2; cx++) {
          if (!(cx ? ax.v1 : ax.v0)) continue;
          const wx = cx ? ax.w1 : ax.w0;
          const dx = cx ? ax.d1 : ax.d0;
          const at = (((b * D + zi) * H + yi) * W + ax.i0 + cx) * C;
          const w = wz * wy * wx;
          let g = 0; // Σ_c dy_c · m_c at this corner
          for (let c = 0; c < C; c++) {
            const gc = dy[o * C + c]!;
            dImage[at + c]! += w * gc;
            g += gc * image[at + c]!;
          }
          gz += dz * wy * wx * g;
          gy += wz * dyw * wx * g;
          gx += wz * wy * dx * g;
        }
      }
    }
    const f = o * nd;
    if (nd === 3) dField[f] = gz;
    dField[f + nd - 2] = gy;
    dField[f + nd - 1] = gx;
  });
}

/** Kernel configs of the JavaScript warp for one backend. */
export function jsWarpKernels(backendName: string): tf.KernelConfig[] {
  return [
    {
      kernelName: 'RegkitWarp',
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { image, field } = inputs as RegkitWarpInputs;
        const d = dims(image, field);
        const outShape = [...field.shape.slice(0, -1), d.channels];
        return runFloatKernel(
          backend as KernelBackendLike,
          [image, field],
          [outShape],
          ([img, u], [out]) => warpForward(d, img!, u!, attrs as unknown as RegkitWarpAttrs, out!),
        )[0]!;
      },
    },
    {
      kernelName: 'RegkitWarpGrad',
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { dy, image, field } = inputs as RegkitWarpGradInputs;
        const d = dims(image, field);
        return runFloatKernel(
          backend as KernelBackendLike,
          [dy, image, field],
          [[...image.shape], [...field.shape]],
          ([g, img, u], [dImg, dU]) =>
            warpBackward(d, g!, img!, u!, attrs as unknown as RegkitWarpAttrs, dImg!, dU!),
        );
      },
    },
    // one gradient alone: the same computation, the other written to a scratch array
    ...(['RegkitWarpImageGrad', 'RegkitWarpFieldGrad'] as const).map((kernelName) => ({
      kernelName,
      backendName,
      kernelFunc: (({ inputs, backend, attrs }) => {
        const { dy, image, field } = inputs as RegkitWarpGradInputs;
        const d = dims(image, field);
        const wantImage = kernelName === 'RegkitWarpImageGrad';
        const other = new Float32Array(
          (wantImage ? field.shape : image.shape).reduce((a, b) => a * b, 1),
        );
        return runFloatKernel(
          backend as KernelBackendLike,
          [dy, image, field],
          [wantImage ? [...image.shape] : [...field.shape]],
          ([g, img, u], [out]) =>
            wantImage
              ? warpBackward(d, g!, img!, u!, attrs as unknown as RegkitWarpAttrs, out!, other)
              : warpBackward(d, g!, img!, u!, attrs as unknown as RegkitWarpAttrs, other, out!),
        )[0]!;
      }) as tf.KernelFunc,
    })),
  ];
}
