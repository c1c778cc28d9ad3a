/**
 * The WebAssembly convolution kernels (csrc/conv.c via src/conv.ts) on the cpu and wasm
 * backends, against: the stock tfjs cpu kernels (computed before ours are registered),
 * a float64 JavaScript reference, and PyTorch (test/fixtures/conv_fixtures.json, made by
 * test/fixtures/make_conv_fixtures.py).
 */
import { readFileSync } from 'node:fs';
import { initBackend, replaceKernel, tf } from '@regkit/core';
import { CONV_KERNEL_NAMES, createConvKernels, initKernels } from '@regkit/kernels';
import { beforeAll, describe, expect, it } from 'vitest';

type Backend = 'cpu' | 'wasm';
const BACKENDS: Backend[] = ['cpu', 'wasm'];
type Shape5 = [number, number, number, number, number];
type Strides3 = [number, number, number];
type Pad = 'same' | 'valid';

const TOL = 1e-4;

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = d; // NaN propagates
  }
  return m;
}

/** Deterministic uniform values in [-1, 1). */
function randomArray(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 31 - 1;
  }
  return a;
}

const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

// ------------------------------------------------------------------------------------
// float64 reference (direct loops; tfjs geometry from computeConv3DInfo)

interface Ref {
  y: Float64Array;
  dx: Float64Array;
  dw: Float64Array;
  outShape: number[];
}

function reference3d(
  x: Float32Array,
  xShape: Shape5,
  w: Float32Array,
  wShape: Shape5,
  dy: Float32Array | null,
  strides: Strides3,
  pad: Pad,
  dilations: Strides3 = [1, 1, 1],
): Ref {
  const info = tf.backend_util.computeConv3DInfo(xShape, wShape, strides, dilations, pad);
  const [B, D, H, W, Ci] = xShape;
  const [KD, KH, KW, , Co] = wShape;
  const { outDepth: Do, outHeight: Ho, outWidth: Wo } = info;
  const y = new Float64Array(B * Do * Ho * Wo * Co);
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(w.length);
  for (let b = 0; b < B; b++)
    for (let oz = 0; oz < Do; oz++)
      for (let oy = 0; oy < Ho; oy++)
        for (let ox = 0; ox < Wo; ox++) {
          const yo = (((b * Do + oz) * Ho + oy) * Wo + ox) * Co;
          for (let kz = 0; kz < KD; kz++) {
            const iz = oz * info.strideDepth - info.padInfo.front + kz * info.dilationDepth;
            if (iz < 0 || iz >= D) continue;
            for (let ky = 0; ky < KH; ky++) {
              const iy = oy * info.strideHeight - info.padInfo.top + ky * info.dilationHeight;
              if (iy < 0 || iy >= H) continue;
              for (let kx = 0; kx < KW; kx++) {
                const ix = ox * info.strideWidth - info.padInfo.left + kx * info.dilationWidth;
                if (ix < 0 || ix >= W) continue;
                const xo = (((b * D + iz) * H + iy) * W + ix) * Ci;
                const wo = ((kz * KH + ky) * KW + kx) * Ci * Co;
                for (let c = 0; c < Ci; c++)
                  for (let o = 0; o < Co; o++) {
                    const wv = w[wo + c * Co + o]!;
                    y[yo + o]! += x[xo + c]! * wv;
                    if (dy) {
                      dx[xo + c]! += dy[yo + o]! * wv;
                      dw[wo + c * Co + o]! += x[xo + c]! * dy[yo + o]!;
                    }
                  }
              }
            }
          }
        }
  return { y, dx, dw, outShape: info.outShape };
}

// ------------------------------------------------------------------------------------
// tfjs runs

interface Grads {
  y: Float32Array;
  dx: Float32Array;
  dw: Float32Array;
}

/** y = conv3d(x, w) and (dx, dw) = grads of sum(y * dy), on the current backend. */
function conv3dWithGrads(
  x: Float32Array,
  xShape: Shape5,
  w: Float32Array,
  wShape: Shape5,
  dy: Float32Array,
  strides: Strides3,
  pad: Pad,
): Grads {
  const outs = tf.tidy(() => {
    const xt = tf.tensor5d(x, xShape);
    const wt = tf.tensor5d(w, wShape);
    const y = tf.conv3d(xt, wt, strides, pad);
    const dyt = tf.tensor(dy, y.shape);
    const [dx, dw] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
      tf.conv3d(a as tf.Tensor5D, b as tf.Tensor5D, strides, pad),
    )([xt, wt], dyt);
    return [y, dx!, dw!];
  });
  const [y, dx, dw] = outs.map((t) => {
    const d = t.dataSync() as Float32Array;
    t.dispose();
    return d;
  });
  return { y: y!, dx: dx!, dw: dw! };
}

function conv2dFilterGrad(
  x: Float32Array,
  xShape: [number, number, number, number],
  wShape: [number, number, number, number],
  dy: Float32Array,
  strides: [number, number],
  pad: 'same' | 'valid' | [[number, number], [number, number], [number, number], [number, number]],
): Float32Array {
  const t = tf.tidy(() => {
    const xt = tf.tensor4d(x, xShape);
    const w0 = tf.zeros(wShape) as tf.Tensor4D;
    const y = tf.conv2d(xt, w0, strides, pad);
    const dyt = tf.tensor(dy, y.shape);
    return tf.grad((w: tf.Tensor) => tf.conv2d(xt, w as tf.Tensor4D, strides, pad))(w0, dyt);
  });
  const d = t.dataSync() as Float32Array;
  t.dispose();
  return d;
}

// ------------------------------------------------------------------------------------
// cases

interface Case3d {
  name: string;
  xShape: Shape5;
  wShape: Shape5;
  strides: Strides3;
  pad: Pad;
}

/**
 * Random cases: stride 1 (Winograd for 3x3x3 with enough channels, direct otherwise) and 2,
 * odd sizes, batches of 2, Cin/Cout not multiples of 4, more tiles than one Winograd batch.
 */
const CASES_3D: Case3d[] = [
  {
    name: '3x3x3 s1 same 8->16',
    xShape: [1, 9, 8, 10, 8],
    wShape: [3, 3, 3, 8, 16],
    strides: [1, 1, 1],
    pad: 'same',
  },
  {
    name: '3x3x3 s1 same 3->5 batch 2',
    xShape: [2, 7, 6, 5, 3],
    wShape: [3, 3, 3, 3, 5],
    strides: [1, 1, 1],
    pad: 'same',
  },
  {
    name: '3x3x3 s1 same 8->6 batch 2 (Winograd, partial lanes)',
    xShape: [2, 5, 6, 7, 8],
    wShape: [3, 3, 3, 8, 6],
    strides: [1, 1, 1],
    pad: 'same',
  },
  {
    name: '3x3x3 s1 valid 6->20',
    xShape: [1, 8, 7, 9, 6],
    wShape: [3, 3, 3, 6, 20],
    strides: [1, 1, 1],
    pad: 'valid',
  },
  {
    name: '3x3x3 s2 same 2->16',
    xShape: [1, 11, 10, 9, 2],
    wShape: [3, 3, 3, 2, 16],
    strides: [2, 2, 2],
    pad: 'same',
  },
  {
    name: '3x3x3 s2 same 16->32',
    xShape: [1, 8, 6, 7, 16],
    wShape: [3, 3, 3, 16, 32],
    strides: [2, 2, 2],
    pad: 'same',
  },
  {
    name: '3x3x3 s2 valid 5->7',
    xShape: [2, 9, 8, 7, 5],
    wShape: [3, 3, 3, 5, 7],
    strides: [2, 2, 2],
    pad: 'valid',
  },
  {
    name: '1x3x3 s1 same 8->12 (2D Winograd on each depth slice)',
    xShape: [1, 5, 9, 8, 8],
    wShape: [1, 3, 3, 8, 12],
    strides: [1, 1, 1],
    pad: 'same',
  },
  {
    name: '1x3x3 s1 valid 12->6 batch 2 (2D Winograd, partial lanes)',
    xShape: [2, 4, 7, 10, 12],
    wShape: [1, 3, 3, 12, 6],
    strides: [1, 1, 1],
    pad: 'valid',
  },
  {
    name: '2x3x1 mixed strides 4->6',
    xShape: [1, 7, 9, 6, 4],
    wShape: [2, 3, 1, 4, 6],
    strides: [1, 2, 3],
    pad: 'same',
  },
  {
    name: '1x1x1 4->3',
    xShape: [1, 5, 4, 6, 4],
    wShape: [1, 1, 1, 4, 3],
    strides: [1, 1, 1],
    pad: 'same',
  },
  {
    name: '3x3x3 s1 same 48->16 (decoder)',
    xShape: [1, 6, 5, 7, 48],
    wShape: [3, 3, 3, 48, 16],
    strides: [1, 1, 1],
    pad: 'same',
  },
];

interface Fixture {
  name: string;
  xShape: Shape5;
  filterShape: Shape5;
  strides: Strides3;
  pad: Pad;
  x: number[];
  filter: number[];
  dy: number[];
  y: number[];
  dx: number[];
  dfilter: number[];
}

const FIXTURES: Fixture[] = (
  JSON.parse(readFileSync(new URL('./fixtures/conv_fixtures.json', import.meta.url), 'utf8')) as {
    cases: Fixture[];
  }
).cases;

interface Conv2dCase {
  name: string;
  xShape: [number, number, number, number];
  wShape: [number, number, number, number];
  strides: [number, number];
  pad: 'same' | 'valid' | [[number, number], [number, number], [number, number], [number, number]];
}

const CASES_2D: Conv2dCase[] = [
  {
    name: '3x3 s1 same 16->16',
    xShape: [2, 13, 11, 16],
    wShape: [3, 3, 16, 16],
    strides: [1, 1],
    pad: 'same',
  },
  {
    name: '3x3 s2 same 3->5',
    xShape: [1, 12, 9, 3],
    wShape: [3, 3, 3, 5],
    strides: [2, 2],
    pad: 'same',
  },
  {
    name: '5x3 s(1,2) valid 2->9',
    xShape: [1, 10, 13, 2],
    wShape: [5, 3, 2, 9],
    strides: [1, 2],
    pad: 'valid',
  },
  {
    name: '3x3 explicit padding 4->4',
    xShape: [1, 8, 7, 4],
    wShape: [3, 3, 4, 4],
    strides: [1, 1],
    pad: [
      [0, 0],
      [1, 2],
      [0, 1],
      [0, 0],
    ],
  },
];

// ------------------------------------------------------------------------------------

/** Stock tfjs cpu results, computed before our kernels are registered. */
const stock3d = new Map<string, Grads>();
const stock2d = new Map<string, Float32Array>();
let ourConfigs: tf.KernelConfig[] = [];

function inputsOf(c: Case3d, seed: number) {
  const x = randomArray(size(c.xShape), seed);
  const w = randomArray(size(c.wShape), seed + 1);
  const info = tf.backend_util.computeConv3DInfo(c.xShape, c.wShape, c.strides, 1, c.pad);
  const dy = randomArray(size(info.outShape), seed + 2);
  return { x, w, dy };
}

function inputs2d(c: Conv2dCase, seed: number) {
  const x = randomArray(size(c.xShape), seed);
  const info = tf.backend_util.computeConv2DInfo(c.xShape, c.wShape, c.strides, 1, c.pad);
  const dy = randomArray(size(info.outShape), seed + 2);
  return { x, dy };
}

beforeAll(async () => {
  expect(await initBackend('cpu')).toBe('cpu');
  CASES_3D.forEach((c, i) => {
    const { x, w, dy } = inputsOf(c, 100 * i + 1);
    stock3d.set(c.name, conv3dWithGrads(x, c.xShape, w, c.wShape, dy, c.strides, c.pad));
  });
  CASES_2D.forEach((c, i) => {
    const { x, dy } = inputs2d(c, 100 * i + 7);
    stock2d.set(c.name, conv2dFilterGrad(x, c.xShape, c.wShape, dy, c.strides, c.pad));
  });
  await initKernels();
  ourConfigs = createConvKernels();
  for (const config of ourConfigs) replaceKernel(config);
});

describe('createConvKernels', () => {
  it('returns configs for every kernel on cpu and wasm, registered as the active kernels', () => {
    expect(ourConfigs).toHaveLength(CONV_KERNEL_NAMES.length * 2);
    for (const backend of BACKENDS)
      for (const name of CONV_KERNEL_NAMES) {
        const config = ourConfigs.find((c) => c.kernelName === name && c.backendName === backend);
        expect(config, `${name}/${backend}`).toBeDefined();
        expect(tf.getKernel(name, backend)?.kernelFunc).toBe(config!.kernelFunc);
      }
  });
});

describe.each(BACKENDS)('conv3d on %s', (backend) => {
  beforeAll(async () => {
    expect(await initBackend(backend)).toBe(backend);
  });

  it.each(CASES_3D.map((c, i) => [c.name, c, i] as const))(
    '%s: forward, input and filter gradients match stock cpu and float64',
    (_name, c, i) => {
      const { x, w, dy } = inputsOf(c, 100 * i + 1);
      const got = conv3dWithGrads(x, c.xShape, w, c.wShape, dy, c.strides, c.pad);
      const stock = stock3d.get(c.name)!;
      const ref = reference3d(x, c.xShape, w, c.wShape, dy, c.strides, c.pad);
      expect(maxDiff(got.y, ref.y)).toBeLessThan(TOL);
      expect(maxDiff(got.dx, ref.dx)).toBeLessThan(TOL);
      expect(maxDiff(got.dw, ref.dw)).toBeLessThan(TOL * 4);
      expect(maxDiff(got.y, stock.y)).toBeLessThan(TOL);
      expect(maxDiff(got.dx, stock.dx)).toBeLessThan(TOL);
      expect(maxDiff(got.dw, stock.dw)).toBeLessThan(TOL * 4);
    },
  );

  it.each(FIXTURES.map((f) => [f.name, f] as const))('%s: matches PyTorch', (_name, f) => {
    const got = conv3dWithGrads(
      Float32Array.from(f.x),
      f.xShape,
      Float32Array.from(f.filter),
      f.filterShape,
      Float32Array.from(f.dy),
      f.strides,
      f.pad,
    );
    expect(maxDiff(got.y, f.y)).toBeLessThan(TOL);
    expect(maxDiff(got.dx, f.dx)).toBeLessThan(TOL);
    expect(maxDiff(got.dw, f.dfilter)).toBeLessThan(TOL);
  });

  it('dilated forward matches float64', () => {
    const xShape: Shape5 = [1, 9, 8, 10, 3];
    const wShape: Shape5 = [3, 3, 2, 3, 6];
    const x = randomArray(size(xShape), 5);
    const w = randomArray(size(wShape), 6);
    for (const pad of ['same', 'valid'] as const) {
      const ref = reference3d(x, xShape, w, wShape, null, [1, 1, 1], pad, [2, 1, 3]);
      const y = tf.tidy(() =>
        tf.conv3d(tf.tensor5d(x, xShape), tf.tensor5d(w, wShape), 1, pad, 'NDHWC', [2, 1, 3]),
      );
      expect(y.shape).toEqual(ref.outShape);
      expect(maxDiff(y.dataSync(), ref.y)).toBeLessThan(TOL);
      y.dispose();
    }
  });

  it('conv3dTranspose (the input-gradient kernel) matches float64', () => {
    const xShape: Shape5 = [1, 7, 6, 9, 5];
    const wShape: Shape5 = [3, 3, 3, 5, 4];
    const w = randomArray(size(wShape), 11);
    for (const strides of [
      [1, 1, 1],
      [2, 2, 2],
    ] as Strides3[]) {
      const info = tf.backend_util.computeConv3DInfo(xShape, wShape, strides, 1, 'same');
      const dy = randomArray(size(info.outShape), 12);
      const ref = reference3d(
        new Float32Array(size(xShape)),
        xShape,
        w,
        wShape,
        dy,
        strides,
        'same',
      );
      const dx = tf.tidy(() =>
        tf.conv3dTranspose(
          tf.tensor(dy, info.outShape) as tf.Tensor5D,
          tf.tensor5d(w, wShape),
          xShape,
          strides,
          'same',
        ),
      );
      expect(maxDiff(dx.dataSync(), ref.dx)).toBeLessThan(TOL);
      dx.dispose();
    }
  });

  it('handles empty batches and releases no tensors', () => {
    const before = tf.memory().numTensors;
    const y = tf.tidy(() =>
      tf.conv3d(
        tf.zeros([0, 4, 4, 4, 2]) as tf.Tensor5D,
        tf.ones([3, 3, 3, 2, 4]) as tf.Tensor5D,
        1,
        'same',
      ),
    );
    expect(y.shape).toEqual([0, 4, 4, 4, 4]);
    y.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe.each(BACKENDS)('conv2d filter gradient on %s', (backend) => {
  beforeAll(async () => {
    expect(await initBackend(backend)).toBe(backend);
  });

  it.each(CASES_2D.map((c, i) => [c.name, c, i] as const))('%s: matches stock cpu', (_n, c, i) => {
    const { x, dy } = inputs2d(c, 100 * i + 7);
    const got = conv2dFilterGrad(x, c.xShape, c.wShape, dy, c.strides, c.pad);
    expect(maxDiff(got, stock2d.get(c.name)!)).toBeLessThan(TOL * 4);
  });
});

interface Fixture2d {
  name: string;
  xShape: [number, number, number, number];
  filterShape: [number, number, number, number];
  strides: [number, number];
  pad: 'same' | 'valid' | [[number, number], [number, number]];
  dilation: number;
  x: number[];
  filter: number[];
  dy: number[];
  y: number[];
  dx: number[];
  dfilter: number[];
}

const FIXTURES_2D: Fixture2d[] = (
  JSON.parse(readFileSync(new URL('./fixtures/conv2d_fixtures.json', import.meta.url), 'utf8')) as {
    cases: Fixture2d[];
  }
).cases;

describe.each(BACKENDS)('conv2d forward and gradients on %s (PyTorch fixtures)', (backend) => {
  beforeAll(async () => {
    expect(await initBackend(backend)).toBe(backend);
  });

  it('runs our Conv2D and Conv2DBackpropInput kernels', () => {
    const ours = (name: string) =>
      ourConfigs.find((c) => c.kernelName === name && c.backendName === backend)!.kernelFunc;
    expect(tf.getKernel('Conv2D', backend)?.kernelFunc).toBe(ours('Conv2D'));
    expect(tf.getKernel('Conv2DBackpropInput', backend)?.kernelFunc).toBe(
      ours('Conv2DBackpropInput'),
    );
  });

  it.each(FIXTURES_2D.map((f) => [f.name, f] as const))('%s', (_n, f) => {
    const pad =
      typeof f.pad === 'string'
        ? f.pad
        : ([[0, 0], f.pad[0], f.pad[1], [0, 0]] as [
            [number, number],
            [number, number],
            [number, number],
            [number, number],
          ]);
    const outs = tf.tidy(() => {
      const x = tf.tensor4d(f.x, f.xShape);
      const w = tf.tensor4d(f.filter, f.filterShape);
      const conv = (a: tf.Tensor, k: tf.Tensor) =>
        tf.conv2d(a as tf.Tensor4D, k as tf.Tensor4D, f.strides, pad, 'NHWC', f.dilation);
      const y = conv(x, w);
      if (f.dilation > 1) return [y]; // tfjs's conv2d has no gradient for dilation > 1
      const [dx, dw] = tf.grads(conv)([x, w], tf.tensor(f.dy, y.shape));
      return [y, dx!, dw!];
    });
    const [y, dx, dw] = outs.map((t) => {
      const d = t.dataSync() as Float32Array;
      t.dispose();
      return d;
    });
    expect(maxDiff(y!, f.y)).toBeLessThan(TOL);
    if (f.dilation === 1) {
      expect(maxDiff(dx!, f.dx)).toBeLessThan(TOL);
      expect(maxDiff(dw!, f.dfilter)).toBeLessThan(TOL);
    }
  });

  it('conv2dTranspose (the input-gradient kernel) is the input gradient of conv2d', () => {
    const f = FIXTURES_2D.find((c) => c.name === 's2_same_3_5')!;
    const got = tf.tidy(() => {
      const w = tf.tensor4d(f.filter, f.filterShape);
      const info = tf.backend_util.computeConv2DInfo(f.xShape, f.filterShape, f.strides, 1, 'same');
      const dy = tf.tensor4d(f.dy, info.outShape);
      return tf.conv2dTranspose(dy, w, f.xShape, f.strides, 'same').dataSync() as Float32Array;
    });
    expect(maxDiff(got, f.dx)).toBeLessThan(TOL);
  });

  it('handles empty batches and releases no tensors', () => {
    const before = tf.memory().numTensors;
    const y = tf.tidy(() =>
      tf.conv2d(
        tf.zeros([0, 6, 6, 3]) as tf.Tensor4D,
        tf.ones([3, 3, 3, 4]) as tf.Tensor4D,
        1,
        'same',
      ),
    );
    expect(y.shape).toEqual([0, 6, 6, 4]);
    y.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe.each(BACKENDS)('unsortedSegmentSum on %s', (backend) => {
  beforeAll(async () => {
    expect(await initBackend(backend)).toBe(backend);
  });

  it('sums rows by segment and drops ids out of range', () => {
    const x = [
      [1, 2, 3, 4, 5],
      [10, 20, 30, 40, 50],
      [100, 200, 300, 400, 500],
      [7, 7, 7, 7, 7],
      [9, 9, 9, 9, 9],
      [0.5, 0.25, 0.125, 1, 2],
    ];
    const ids = [0, 2, 0, -1, 3, 2];
    const out = tf.tidy(() => tf.unsortedSegmentSum(tf.tensor2d(x), tf.tensor1d(ids, 'int32'), 3));
    expect(out.shape).toEqual([3, 5]);
    expect(Array.from(out.dataSync())).toEqual([
      101, 202, 303, 404, 505, 0, 0, 0, 0, 0, 10.5, 20.25, 30.125, 41, 52,
    ]);
    out.dispose();
  });

  it('works for inner sizes not a multiple of 4 and 3D data', () => {
    const x = randomArray(4 * 3 * 3, 3);
    const ids = [1, 1, 0, 1];
    const out = tf.tidy(() =>
      tf.unsortedSegmentSum(tf.tensor3d(x, [4, 3, 3]), tf.tensor1d(ids, 'int32'), 2),
    );
    expect(out.shape).toEqual([2, 3, 3]);
    const expected = new Float64Array(18);
    for (let i = 0; i < 4; i++)
      for (let j = 0; j < 9; j++) expected[ids[i]! * 9 + j]! += x[i * 9 + j]!;
    expect(maxDiff(out.dataSync(), expected)).toBeLessThan(1e-6);
    out.dispose();
  });

  it('is the gradient of tf.gather', () => {
    const table = randomArray(6 * 3, 9);
    const idx = [5, 0, 5, 2, 2, 2];
    const g = tf.tidy(() =>
      tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, tf.tensor1d(idx, 'int32'))))(
        tf.tensor2d(table, [6, 3]),
      ),
    );
    const expected = [1, 1, 1, 0, 0, 0, 3, 3, 3, 0, 0, 0, 0, 0, 0, 2, 2, 2];
    expect(Array.from(g.dataSync())).toEqual(expected);
    g.dispose();
  });

  it('hands int32 data to the kernel registered before', () => {
    const out = tf.tidy(() =>
      tf.unsortedSegmentSum(tf.tensor1d([1, 2, 3], 'int32'), tf.tensor1d([1, 0, 1], 'int32'), 2),
    );
    expect(out.dtype).toBe('int32');
    expect(Array.from(out.dataSync())).toEqual([2, 4]);
    out.dispose();
  });
});
