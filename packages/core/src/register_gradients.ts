/**
 * Registers the gradients of every stock tfjs-core kernel.
 *
 * tfjs-core's Node (CommonJS) entry point does not register gradients, and its
 * ESM file `dist/register_all_gradients.js` cannot be imported by Node directly
 * (extensionless relative imports). The build inlines that module (see
 * `tsup.config.ts`); it registers into tfjs's global gradient registry, which
 * every copy of tfjs-core shares, so `tf.grad` works for all stock ops.
 */
import '@tensorflow/tfjs-core/dist/register_all_gradients';
// Chained ops (`t.reshape(...)`, `t.add(...)`), also missing from the Node entry point.
import '@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops';
