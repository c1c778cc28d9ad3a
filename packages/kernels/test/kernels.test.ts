/**
 * The WebAssembly warp and linear resize against core's portable composite of stock tfjs ops and against
 * core's JavaScript kernel (the contract's reference implementation), on random inputs.
 */
import { RegkitWarp, RegkitWarpGrad, randomSmoothField, tf } from '@regkit/core';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  BACKENDS,
  expectSameBits,
  MODES,
  maxDiff,
  resizeWithGrad,
  useKernels,
  warpWithGrads,
  withCoreJsKernels,
  withPortableOps,
} from './helpers.js';

/** [image spatial, field spatial]: 2D and 3D, same and differing grids. */
const GRIDS: Array<[number[], number[]]> = [
  [
    [23, 19],
    [23, 19],
  ],
  [
    [9, 14],
    [12, 7],
  ],
  [
    [11, 13, 9],
    [11, 13, 9],
  ],
  [
    [12, 10, 8],
    [7, 9, 11],
  ],
];

function inputs(imageSpatial: number[], fieldSpatial: number[], C: number, scale = 1) {
  const image = tf.randomUniform([2, ...imageSpatial, C], -1, 1, 'float32', 1);
  const smooth = randomSmoothField(fieldSpatial, {
    maxDisplacement: 4,
    controlSpacing: 4,
    seed: 2,
    batch: 2,
  });
  // away from exact integers (and .5), where linear weights have kinks and nearest ties
  const field = tf.add(tf.mul(smooth, scale), 0.0123);
  const dy = tf.randomUniform([2, ...fieldSpatial, C], -1, 1, 'float32', 3);
  return { image, field, dy };
}

const label = (g: number[]) => g.join('x');

describe.each(BACKENDS)('warp kernels on %s', (backend) => {
  beforeAll(() => useKernels(backend));

  describe.each(MODES)('$interpolation $padding', (opts) => {
    it.each(
      GRIDS.flatMap(([s, so]) => [1, 3].map((C) => [label(s), label(so), C, s, so] as const)),
    )(
      'image %s, field %s, C=%i: outputs and both gradients match the portable composite',
      (_a, _b, C, s, so) => {
        tf.tidy(() => {
          const { image, field, dy } = inputs(s as number[], so as number[], C);
          const ours = warpWithGrads(image, field, dy, opts);
          const ref = withPortableOps(() => warpWithGrads(image, field, dy, opts));
          ['out', 'dImage', 'dField'].forEach((name, i) => {
            expect(maxDiff(ours[i]!, ref[i]!), name).toBeLessThanOrEqual(1e-4);
          });
        });
      },
    );

    it.each([1, 3])(
      'C=%i, displacements up to 3x the image size: matches core JavaScript kernel',
      (C) => {
        tf.tidy(() => {
          for (const [s, so] of GRIDS) {
            const { image, field, dy } = inputs(s, so, C, 4);
            const ours = warpWithGrads(image, field, dy, opts);
            const ref = withCoreJsKernels(() => warpWithGrads(image, field, dy, opts));
            ['out', 'dImage', 'dField'].forEach((name, i) => {
              expect(maxDiff(ours[i]!, ref[i]!), `${label(s)} ${name}`).toBeLessThanOrEqual(1e-5);
            });
          }
        });
      },
    );
  });

  it.each([1, 3])(
    'C=%i, integer and half-integer positions, grids 1 to 9 wide: matches core JavaScript kernel',
    (C) => {
      tf.tidy(() => {
        const grids = [
          [1, 1],
          [1, 5],
          [2, 7],
          [5, 1],
          [3, 1, 9],
          [2, 3, 2],
          [1, 4, 5],
        ];
        for (const s of grids) {
          const nd = s.length;
          const image = tf.randomUniform([2, ...s, C], -1, 1, 'float32', 5);
          // shifts in {-3, -2.5, ..., 3}: exact corners, borders and points just outside
          const n = s.reduce((a, b) => a * b, 1) * 2 * nd;
          const shifts = Array.from({ length: n }, (_, i) => ((i * 7) % 13) / 2 - 3);
          const field = tf.tensor(shifts, [2, ...s, nd]);
          const dy = tf.randomUniform([2, ...s, C], -1, 1, 'float32', 6);
          for (const opts of MODES) {
            const ours = warpWithGrads(image, field, dy, opts);
            const ref = withCoreJsKernels(() => warpWithGrads(image, field, dy, opts));
            ['out', 'dImage', 'dField'].forEach((name, i) => {
              expect(
                maxDiff(ours[i]!, ref[i]!),
                `${label(s)} ${opts.interpolation} ${opts.padding} ${name}`,
              ).toBeLessThanOrEqual(1e-6);
            });
          }
        }
      });
    },
  );

  it('nearest copies values exactly (labels) and ties round half to even', () => {
    tf.tidy(() => {
      const labels = tf.tensor([0, 1, 2, 3, 4, 5, 6, 7], [1, 1, 8, 1]);
      // positions x + u = 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 6.9 → 0, 2, 2, 4, 4, 6, 6, 7
      const u = tf.tensor(
        [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, -0.1].flatMap((x) => [0, x]),
        [1, 1, 8, 2],
      );
      const out = tf.tidy(() =>
        warpWithGrads(labels, u, tf.onesLike(labels), {
          interpolation: 'nearest',
          padding: 'zeros',
        }),
      );
      expect(Array.from(out[0].dataSync())).toEqual([0, 2, 2, 4, 4, 6, 6, 7]);
      expect(Array.from(out[2].dataSync()).every((v) => v === 0)).toBe(true);
    });
  });

  it('an identity field returns the image (every mode)', () => {
    tf.tidy(() => {
      const image = tf.randomUniform([2, 5, 6, 7, 3], -1, 1, 'float32', 9);
      const zero = tf.zeros([2, 5, 6, 7, 3]);
      for (const opts of MODES) {
        expect(maxDiff(warpWithGrads(image, zero, image, opts)[0], image)).toBe(0);
      }
    });
  });

  it.each([
    [[7, 9], 2],
    [[6, 7, 5], 3],
  ])(
    'a field warped by itself (the same tensor as image and field, copied in once) equals the same with a copy, bit for bit (%j)',
    (s, nd) => {
      tf.tidy(() => {
        const u = tf.mul(
          randomSmoothField(s as number[], {
            maxDisplacement: 2,
            controlSpacing: 3,
            seed: 4,
            batch: 2,
          }),
          1.3,
        );
        const copy = tf.add(u, 0);
        const dy = tf.randomUniform([2, ...(s as number[]), nd as number], -1, 1, 'float32', 7);
        for (const opts of MODES) {
          const attrs = { interpolation: opts.interpolation, padding: opts.padding };
          const run = (image: tf.Tensor, field: tf.Tensor) => [
            tf.engine().runKernel(RegkitWarp, { image, field }, attrs) as tf.Tensor,
            ...(tf.engine().runKernel(RegkitWarpGrad, { dy, image, field }, attrs) as tf.Tensor[]),
          ];
          const same = run(u, u);
          const apart = run(u, copy);
          ['out', 'dImage', 'dField'].forEach((name, i) => {
            expectSameBits(
              same[i]!.dataSync(),
              apart[i]!.dataSync(),
              `${opts.interpolation} ${opts.padding} ${name}`,
            );
          });
        }
      });
    },
  );
});

describe.each(BACKENDS)('resizeLinear kernels on %s', (backend) => {
  beforeAll(() => useKernels(backend));

  /** [x shape, output spatial shape]: up, down, mixed, unit axes, batches, 2D and 3D. */
  const CASES: Array<[number[], number[]]> = [
    [
      [1, 12, 14, 12, 3],
      [23, 27, 23],
    ],
    [
      [2, 7, 9, 5, 2],
      [4, 17, 5],
    ],
    [
      [1, 1, 6, 4, 1],
      [5, 1, 9],
    ],
    [
      [3, 13, 8, 4],
      [5, 15],
    ],
    [
      [1, 2, 2, 1],
      [1, 1],
    ],
  ];

  it.each(CASES.map(([x, to]) => [label(x), label(to), x, to] as const))(
    'x %s to %s: output and gradient match core JavaScript kernel and the portable composite',
    (_a, _b, xShape, to) => {
      tf.tidy(() => {
        const x = tf.randomUniform(xShape as number[], -1, 1, 'float32', 11);
        const dy = tf.randomUniform(
          [xShape[0]!, ...(to as number[]), xShape[xShape.length - 1]!],
          -1,
          1,
          'float32',
          12,
        );
        const ours = resizeWithGrad(x, to as number[], dy);
        const js = withCoreJsKernels(() => resizeWithGrad(x, to as number[], dy));
        const portable = withPortableOps(() => resizeWithGrad(x, to as number[], dy));
        ['out', 'dx'].forEach((name, i) => {
          expect(maxDiff(ours[i]!, js[i]!), `${name} vs js`).toBeLessThanOrEqual(1e-5);
          expect(maxDiff(ours[i]!, portable[i]!), `${name} vs portable`).toBeLessThanOrEqual(1e-5);
        });
      });
    },
  );
});
