/**
 * The `@tensorflow/tfjs-core` namespace every regkit package uses.
 *
 * tfjs-core is a peer dependency, so this is the one instance shared by the
 * application, the backends and all `@regkit/*` packages.
 *
 * @example
 * ```ts
 * import { tf } from '@regkit/core';
 * const x = tf.zeros([1, 64, 64, 1]);
 * ```
 */
import * as tf from '@tensorflow/tfjs-core';

export { tf };
