/**
 * Gradient of the `RegkitMindSsc` kernel (MIND-SSC, `mindSsc` of `@regkit/losses`): the
 * kernel `RegkitMindSscGrad` run on `{ dy, image }` with the forward's attributes (the image
 * is saved; the kernel recomputes the forward's d and V). Only kernels registered under both
 * names are used while a gradient tape records (see `mindSsc`).
 */
import { RegkitMindSsc, RegkitMindSscGrad } from './kernel_names.js';
import { tf } from './tf.js';

tf.registerGradient({
  kernelName: RegkitMindSsc,
  inputsToSave: ['image'],
  gradFunc: (dy, saved, attrs) => {
    const [image] = saved as [tf.Tensor];
    // the forward returns a list of one output: dy is that output's cotangent
    const g = Array.isArray(dy) ? dy[0]! : dy;
    return {
      image: () =>
        tf
          .engine()
          .runKernel(
            RegkitMindSscGrad,
            { dy: g, image },
            attrs as unknown as tf.NamedAttrMap,
          ) as tf.Tensor,
    };
  },
});
