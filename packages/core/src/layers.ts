import { RegkitMaxPool, RegkitMaxPoolGrad } from './kernel_names.js';
import './max_pool.js';
import { isInitialKernel } from './kernel_fixes.js';
import { Module } from './module.js';
import { mulberry32 } from './random.js';
import { tf } from './tf.js';
import { upsampleNearest } from './upsample.js';
import { assertNdim, assertTensor, fail, fmtShape } from './validate.js';
import { hasKernels } from './warp.js';

/**
 * Initial values of a weight. `'torchDefault'`: PyTorch's `Conv`/`Linear` default
 * (Kaiming-uniform with a = √5, i.e. U(±1/√fanIn), for kernels and biases alike);
 * `'heNormal'`: N(0, 2/fanIn); `'glorotUniform'`: U(±√(6/(fanIn + fanOut)));
 * `'zeros'`; `{ normal: σ }`: N(0, σ²); `{ uniform: a }`: U(±a).
 */
export type Initializer =
  | 'torchDefault'
  | 'heNormal'
  | 'glorotUniform'
  | 'zeros'
  | { normal: number }
  | { uniform: number };

/** Standard normal numbers from a seeded uniform generator (Box–Muller). */
function gaussian(rand: () => number): () => number {
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const s = spare;
      spare = null;
      return s;
    }
    const u = 1 - rand();
    const r = Math.sqrt(-2 * Math.log(u));
    const t = 2 * Math.PI * rand();
    spare = r * Math.sin(t);
    return r * Math.cos(t);
  };
}

/**
 * A float32 tensor of `shape` drawn from `init` with a seeded generator (equal seeds give
 * equal weights on every backend). `fanIn`/`fanOut` are the layer's fan-in and fan-out.
 */
export function initialWeight(
  shape: readonly number[],
  init: Initializer,
  fanIn: number,
  fanOut: number,
  seed: number,
): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const values = new Float32Array(n);
  const rand = mulberry32(seed);
  const uniform = (a: number) => {
    for (let i = 0; i < n; i++) values[i] = (2 * rand() - 1) * a;
  };
  const normal = (s: number) => {
    const g = gaussian(rand);
    for (let i = 0; i < n; i++) values[i] = g() * s;
  };
  if (init === 'zeros') {
    // already zero
  } else if (init === 'torchDefault') uniform(1 / Math.sqrt(fanIn));
  else if (init === 'heNormal') normal(Math.sqrt(2 / fanIn));
  else if (init === 'glorotUniform') uniform(Math.sqrt(6 / (fanIn + fanOut)));
  else if (typeof init === 'object' && 'normal' in init) normal(init.normal);
  else if (typeof init === 'object' && 'uniform' in init) uniform(init.uniform);
  else fail('initialWeight', `unknown initializer ${JSON.stringify(init)}`);
  return tf.tensor(values, [...shape], 'float32');
}

/** `kernel` `[...k, Cin, Cout]` with d − 1 zeros between taps: size (k − 1)d + 1 per axis. */
function dilateKernel(kernel: tf.Tensor, ndim: number, d: number): tf.Tensor {
  let y = kernel;
  for (let axis = 0; axis < ndim; axis++) {
    const shape = [...y.shape];
    const k = shape[axis]!;
    const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
    const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const padded = tf.pad(tf.reshape(y, [outer, k, 1, inner]), [
      [0, 0],
      [0, 0],
      [0, d - 1],
      [0, 0],
    ]);
    const taps = tf.slice(
      tf.reshape(padded, [outer, k * d, inner]),
      [0, 0, 0],
      [outer, (k - 1) * d + 1, inner],
    );
    shape[axis] = (k - 1) * d + 1;
    y = tf.reshape(taps, shape);
  }
  return y;
}

/** [before, after] zero padding of both axes of a stride-1 2D convolution, or null when the fast path does not apply. */
function stride1Pads(
  padding: 'same' | 'valid' | number,
  kh: number,
  kw: number,
): number[][] | null {
  const pads = [kh, kw].map((k) => {
    if (padding === 'valid') return [0, 0];
    if (padding === 'same') return [Math.floor((k - 1) / 2), k - 1 - Math.floor((k - 1) / 2)];
    return [padding, padding];
  });
  const ks = [kh, kw];
  return pads.every(([b, a], i) => b! <= ks[i]! - 1 && a! <= ks[i]! - 1) ? pads : null;
}

/**
 * The filter gradient of a stride-1 'valid' 2D convolution of `x` `[B, Hp, Wp, ci]` giving
 * `dy` `[B, H, W, co]`: dW[i, j, c, o] = Σ x[b, h + i, w + j, c]·dy[b, h, w, o]. On cpu and wasm
 * without `@regkit/kernels` the stock Conv2DBackpropFilter is a scalar loop (12.7 s for a
 * 96×112 32→16 3×3 layer); the same sum is a forward convolution of x with channels and batch
 * swapped by dy as the filter (18 ms on wasm, docs/tfjs-pitfalls.md). Registered kernels
 * (`@regkit/kernels`: 6 ms; GPU backends) are used as they are.
 */
function conv2dFilterGradient(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  filterShape: [number, number, number, number],
): tf.Tensor {
  const backend = tf.getBackend();
  if (
    (backend === 'cpu' || backend === 'wasm') &&
    isInitialKernel('Conv2DBackpropFilter', backend)
  ) {
    return tf.tidy(() => {
      const xt = tf.transpose(x, [3, 1, 2, 0]) as tf.Tensor4D; // [ci, Hp, Wp, B]
      const filter = tf.transpose(dy, [1, 2, 0, 3]) as tf.Tensor4D; // [H, W, B, co]
      return tf.transpose(tf.conv2d(xt, filter, 1, 'valid'), [1, 2, 0, 3]); // [kh, kw, ci, co]
    });
  }
  return tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, {
    strides: 1,
    pad: 'valid',
    dataFormat: 'NHWC',
    filterShape,
  } as unknown as tf.NamedAttrMap) as tf.Tensor;
}

/**
 * True when the current backend is cpu or wasm with its stock Conv2DBackpropInput (a scalar
 * loop): then stride-1 2D convolutions take {@link conv2dStride1}. With `@regkit/kernels`
 * registered, tfjs's own conv2d and its gradients run the threaded WebAssembly kernels, with
 * the padding inside the kernel (no padded copies, flipped filters or transposes).
 */
function stockConv2dBackpropInput(): boolean {
  const backend = tf.getBackend();
  return (
    (backend === 'cpu' || backend === 'wasm') && isInitialKernel('Conv2DBackpropInput', backend)
  );
}

/**
 * Stride-1 2D convolution whose input gradient is itself a convolution (of the padded dy
 * with the flipped, transposed kernel): tfjs-backend-wasm's Conv2DBackpropInput is a scalar
 * loop ~10× slower than its XNNPACK Conv2D (docs/tfjs-pitfalls.md).
 */
function conv2dStride1(x: tf.Tensor4D, kernel: tf.Tensor4D, pads: number[][]): tf.Tensor {
  const [kh, kw] = kernel.shape;
  const padOf = (t: tf.Tensor4D, p: number[][]) =>
    p.every(([b, a]) => b === 0 && a === 0)
      ? t
      : tf.pad(t, [[0, 0], p[0] as [number, number], p[1] as [number, number], [0, 0]]);
  const op = tf.customGrad(((xi: tf.Tensor4D, w: tf.Tensor4D, save: tf.GradSaveFunc) => {
    save([xi, w]);
    return {
      value: tf.conv2d(padOf(xi, pads), w, 1, 'valid'),
      gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) => {
        const [xs, ws] = saved as [tf.Tensor4D, tf.Tensor4D];
        const flipped = tf.transpose(tf.reverse(ws, [0, 1]), [0, 1, 3, 2]) as tf.Tensor4D;
        const back = pads.map(([b, a], i) => [[kh, kw][i]! - 1 - b!, [kh, kw][i]! - 1 - a!]);
        const dx = tf.conv2d(padOf(dy, back), flipped, 1, 'valid');
        return [dx, conv2dFilterGradient(padOf(xs, pads), dy, ws.shape)];
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(x, kernel);
}

/** Options of {@link Conv}. */
export interface ConvOptions {
  /** Kernel size along every spatial axis (default 3). */
  kernelSize?: number;
  /** Stride along every spatial axis (default 1). */
  stride?: number;
  /**
   * `'same'` (TensorFlow rule: output ⌈n/stride⌉, any extra padding after), `'valid'`, or a
   * number p of zero voxels added on both sides of every axis (PyTorch's `padding=p`).
   * Default: (kernelSize − 1)/2 for odd kernels, i.e. PyTorch's usual `padding=k//2`.
   */
  padding?: 'same' | 'valid' | number;
  /** Dilation along every spatial axis (default 1; stride must then be 1). */
  dilation?: number;
  /** Adds a learnt bias (default true). */
  bias?: boolean;
  /** Kernel initializer (default `'torchDefault'`). */
  init?: Initializer;
  /** Bias initializer (default: `'torchDefault'` when `init` is, else `'zeros'`). */
  biasInit?: Initializer;
  /** Seed of the initial weights (default 0). */
  seed?: number;
}

function checkInput(fn: string, x: tf.Tensor, ndim: number, channels: number): void {
  assertTensor(fn, 'x', x);
  if (x.rank !== ndim + 2 || x.shape[ndim + 1] !== channels) {
    fail(
      fn,
      `'x' must be [B, ${ndim === 2 ? 'H, W' : 'D, H, W'}, ${channels}], got ${fmtShape(x.shape)}`,
    );
  }
}

/**
 * 2D or 3D convolution of channels-last images `[B, ...S, Cin]` → `[B, ...S', Cout]`, the
 * kernel stored as `[...k, Cin, Cout]` (tfjs layout; a PyTorch weight `[Cout, Cin, ...k]`
 * maps to it by moving its first two axes last).
 */
export class Conv extends Module {
  readonly kernel: tf.Variable;
  readonly bias: tf.Variable | null;
  readonly kernelSize: number;
  readonly stride: number;
  readonly padding: 'same' | 'valid' | number;
  readonly dilation: number;

  constructor(
    readonly ndim: 2 | 3,
    readonly inChannels: number,
    readonly outChannels: number,
    options: ConvOptions = {},
  ) {
    super();
    const fn = 'Conv';
    assertNdim(fn, ndim);
    for (const [name, v] of [
      ['inChannels', inChannels],
      ['outChannels', outChannels],
      ['kernelSize', options.kernelSize ?? 3],
      ['stride', options.stride ?? 1],
      ['dilation', options.dilation ?? 1],
    ] as const) {
      if (!Number.isInteger(v) || v < 1) fail(fn, `'${name}' must be a positive integer, got ${v}`);
    }
    this.kernelSize = options.kernelSize ?? 3;
    this.stride = options.stride ?? 1;
    this.dilation = options.dilation ?? 1;
    if (this.dilation > 1 && this.stride > 1) fail(fn, `'dilation' > 1 needs stride 1`);
    const defaultPadding =
      this.kernelSize % 2 === 1 ? ((this.kernelSize - 1) / 2) * this.dilation : 'same';
    this.padding = options.padding ?? defaultPadding;
    if (
      typeof this.padding === 'number' &&
      !(Number.isInteger(this.padding) && this.padding >= 0)
    ) {
      fail(fn, `'padding' must be 'same', 'valid' or an integer ≥ 0, got ${this.padding}`);
    }
    const init = options.init ?? 'torchDefault';
    const fanIn = inChannels * this.kernelSize ** ndim;
    const fanOut = outChannels * this.kernelSize ** ndim;
    const seed = options.seed ?? 0;
    const shape = [...new Array<number>(ndim).fill(this.kernelSize), inChannels, outChannels];
    this.kernel = this.addWeight('kernel', initialWeight(shape, init, fanIn, fanOut, seed));
    this.bias =
      options.bias === false
        ? null
        : this.addWeight(
            'bias',
            initialWeight(
              [outChannels],
              options.biasInit ?? (init === 'torchDefault' ? 'torchDefault' : 'zeros'),
              fanIn,
              fanOut,
              seed ^ 0x5bd1e995,
            ),
          );
  }

  /** Convolves `x` `[B, ...S, inChannels]`. */
  apply(x: tf.Tensor): tf.Tensor {
    checkInput('Conv.apply', x, this.ndim, this.inChannels);
    return tf.tidy(() => {
      // tfjs convolutions have no gradient for dilation > 1: dilate the kernel instead
      const kernel =
        this.dilation > 1 ? dilateKernel(this.kernel, this.ndim, this.dilation) : this.kernel;
      const fast =
        this.ndim === 2 && this.stride === 1 && stockConv2dBackpropInput()
          ? stride1Pads(this.padding, kernel.shape[0]!, kernel.shape[1]!)
          : null;
      let y: tf.Tensor;
      if (fast) {
        y = conv2dStride1(x as tf.Tensor4D, kernel as tf.Tensor4D, fast);
      } else {
        let input = x;
        let pad: 'same' | 'valid' = 'valid';
        if (this.padding === 'same' || this.padding === 'valid') pad = this.padding;
        else if (
          this.stride === 1 &&
          kernel.shape.slice(0, this.ndim).every((k) => k === 2 * (this.padding as number) + 1)
        ) {
          // symmetric padding p with a (2p + 1)-wide kernel at stride 1 is 'same': no padded
          // copy of the input (tfjs's cpu Pad runs element by element: 12 of the 19 s of a
          // 3D U-Net forward at 80×96×112)
          pad = 'same';
        } else if (this.padding > 0) {
          const p = this.padding;
          input = tf.pad(x, [[0, 0], ...new Array(this.ndim).fill([p, p]), [0, 0]]);
        }
        y =
          this.ndim === 2
            ? tf.conv2d(input as tf.Tensor4D, kernel as tf.Tensor4D, this.stride, pad, 'NHWC')
            : tf.conv3d(input as tf.Tensor5D, kernel as tf.Tensor5D, this.stride, pad, 'NDHWC');
      }
      return this.bias ? tf.add(y, this.bias) : y;
    });
  }
}

/** Options of {@link Dense}. */
export interface DenseOptions {
  /** Adds a learnt bias (default true). */
  bias?: boolean;
  /** Weight initializer (default `'torchDefault'`). */
  init?: Initializer;
  /** Bias initializer (default: `'torchDefault'` when `init` is, else `'zeros'`). */
  biasInit?: Initializer;
  /** Seed of the initial weights (default 0). */
  seed?: number;
}

/** Fully connected layer on the last axis: `[..., in]` → `[..., out]`, weight `[in, out]`. */
export class Dense extends Module {
  readonly weight: tf.Variable;
  readonly bias: tf.Variable | null;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    options: DenseOptions = {},
  ) {
    super();
    for (const [name, v] of [
      ['inFeatures', inFeatures],
      ['outFeatures', outFeatures],
    ] as const) {
      if (!Number.isInteger(v) || v < 1)
        fail('Dense', `'${name}' must be a positive integer, got ${v}`);
    }
    const init = options.init ?? 'torchDefault';
    const seed = options.seed ?? 0;
    this.weight = this.addWeight(
      'weight',
      initialWeight([inFeatures, outFeatures], init, inFeatures, outFeatures, seed),
    );
    this.bias =
      options.bias === false
        ? null
        : this.addWeight(
            'bias',
            initialWeight(
              [outFeatures],
              options.biasInit ?? (init === 'torchDefault' ? 'torchDefault' : 'zeros'),
              inFeatures,
              outFeatures,
              seed ^ 0x5bd1e995,
            ),
          );
  }

  /** Applies the layer to `x` `[..., inFeatures]`. */
  apply(x: tf.Tensor): tf.Tensor {
    assertTensor('Dense.apply', 'x', x);
    if (x.shape[x.rank - 1] !== this.inFeatures) {
      fail('Dense.apply', `'x' must end in ${this.inFeatures} features, got ${fmtShape(x.shape)}`);
    }
    return tf.tidy(() => {
      const flat = tf.reshape(x, [-1, this.inFeatures]);
      let y: tf.Tensor = tf.matMul(flat, this.weight);
      if (this.bias) y = tf.add(y, this.bias);
      return tf.reshape(y, [...x.shape.slice(0, -1), this.outFeatures]);
    });
  }
}

/**
 * Group normalisation (Wu & He) of channels-last images `[B, ...S, C]`: mean and variance
 * over the spatial axes and the C/groups channels of each group, then a learnt per-channel
 * scale (init 1) and shift (init 0), as PyTorch's `GroupNorm`.
 */
export class GroupNorm extends Module {
  readonly gamma: tf.Variable;
  readonly beta: tf.Variable;

  constructor(
    readonly groups: number,
    readonly channels: number,
    readonly epsilon = 1e-5,
  ) {
    super();
    if (!Number.isInteger(groups) || groups < 1 || channels % groups !== 0) {
      fail(
        'GroupNorm',
        `'groups' must be a positive divisor of ${channels} channels, got ${groups}`,
      );
    }
    this.gamma = this.addWeight('gamma', tf.ones([channels]));
    this.beta = this.addWeight('beta', tf.zeros([channels]));
  }

  /** Normalises `x` `[B, ...S, channels]`. */
  apply(x: tf.Tensor): tf.Tensor {
    assertTensor('GroupNorm.apply', 'x', x);
    if (x.rank < 3 || x.shape[x.rank - 1] !== this.channels) {
      fail('GroupNorm.apply', `'x' must be [B, ...S, ${this.channels}], got ${fmtShape(x.shape)}`);
    }
    return tf.tidy(() => {
      const g = this.groups;
      const grouped = tf.reshape(x, [x.shape[0]!, -1, g, this.channels / g]);
      const { mean, variance } = tf.moments(grouped, [1, 3], true);
      const normed = tf.mul(tf.sub(grouped, mean), tf.rsqrt(tf.add(variance, this.epsilon)));
      return tf.add(tf.mul(tf.reshape(normed, x.shape), this.gamma), this.beta);
    });
  }
}

export { upsampleNearest };

function spatialRankOf(fn: string, x: tf.Tensor): 2 | 3 {
  assertTensor(fn, 'x', x);
  if (x.rank !== 4 && x.rank !== 5) {
    fail(fn, `'x' must be [B, H, W, C] or [B, D, H, W, C], got ${fmtShape(x.shape)}`);
  }
  return (x.rank - 2) as 2 | 3;
}

/**
 * `x` cropped to whole pooling windows. tfjs-backend-wasm's MaxPoolGrad drops gradient
 * entries when trailing voxels do not fill a window; pooling the cropped tensor avoids it.
 */
function cropToWindows(x: tf.Tensor, size: number): tf.Tensor {
  const spatial = x.shape.slice(1, -1);
  if (spatial.every((n) => n % size === 0)) return x;
  const kept = spatial.map((n) => n - (n % size));
  return tf.slice(x, new Array(x.rank).fill(0), [x.shape[0]!, ...kept, x.shape[x.rank - 1]!]);
}

function checkPoolSize(fn: string, x: tf.Tensor, size: number): 2 | 3 {
  const nd = spatialRankOf(fn, x);
  if (!Number.isInteger(size) || size < 1)
    fail(fn, `'size' must be a positive integer, got ${size}`);
  if (x.shape.slice(1, -1).some((n) => n < size)) {
    fail(fn, `every spatial size of 'x' ${fmtShape(x.shape)} must be ≥ the window ${size}`);
  }
  return nd;
}

/**
 * Max pooling with window = stride = `size` ('valid': trailing voxels short of a window are
 * dropped); the gradient goes to the first maximum of each window (PyTorch's rule). Runs
 * core's `RegkitMaxPool` kernel on cpu and wasm (tfjs-backend-wasm's MaxPool3D and
 * MaxPoolGrad return wrong values for some shapes), stock pooling elsewhere.
 */
export function maxPool(x: tf.Tensor, size = 2): tf.Tensor {
  const nd = checkPoolSize('maxPool', x, size);
  return tf.tidy(() => {
    const c = cropToWindows(x, size);
    if (hasKernels(RegkitMaxPool, RegkitMaxPoolGrad)) {
      const xf = c.dtype === 'float32' ? c : tf.cast(c, 'float32');
      return tf
        .engine()
        .runKernel(RegkitMaxPool, { x: xf }, { size } as unknown as tf.NamedAttrMap) as tf.Tensor;
    }
    return nd === 2 ? maxPool2d(c as tf.Tensor4D, size) : maxPoolAxes(c, size);
  });
}

/**
 * Portable max pooling of whole windows, one axis at a time (maximum over `size` strided
 * slices): stock wasm MaxPool3D is wrong for non-cubic inputs (docs/tfjs-pitfalls.md).
 */
function maxPoolAxes(x: tf.Tensor, size: number): tf.Tensor {
  let y = x;
  const shape = [...x.shape];
  for (let axis = 1; axis < x.rank - 1; axis++) {
    const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
    const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const n = shape[axis]! / size;
    const r = tf.reshape(y, [outer, n, size, inner]);
    const parts = Array.from({ length: size }, (_, j) =>
      tf.slice(r, [0, 0, j, 0], [outer, n, 1, inner]),
    );
    y = parts.reduce((a, b) => tf.maximum(a, b));
    shape[axis] = n;
    y = tf.reshape(y, shape);
  }
  return y;
}

/**
 * 2D max pooling of whole windows with its own gradient: tfjs-backend-wasm's MaxPoolGrad
 * returns wrong values (docs/tfjs-pitfalls.md). The gradient goes to the voxels equal to
 * their window's maximum (all of them on exact ties).
 */
function maxPool2d(x: tf.Tensor4D, size: number): tf.Tensor {
  const pool = tf.customGrad(((input: tf.Tensor, save: tf.GradSaveFunc) => {
    const y: tf.Tensor = tf.maxPool(input as tf.Tensor4D, size, size, 'valid');
    save([input, y]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, ys] = saved as [tf.Tensor, tf.Tensor];
        const mask = tf.cast(tf.equal(xs, upsampleNearest(ys, size)), 'float32');
        return tf.mul(mask, upsampleNearest(dy, size));
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return pool(x);
}

/** Average pooling with window = stride = `size` ('valid', as {@link maxPool}). */
export function avgPool(x: tf.Tensor, size = 2): tf.Tensor {
  const nd = checkPoolSize('avgPool', x, size);
  return tf.tidy(() => {
    const c = cropToWindows(x, size);
    return nd === 2
      ? tf.avgPool(c as tf.Tensor4D, size, size, 'valid')
      : tf.avgPool3d(c as tf.Tensor5D, size, size, 'valid');
  });
}
