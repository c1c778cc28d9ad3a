/**
 * Which tensors a running gradient computation differentiates through, for gradient functions
 * that compute each input's gradient separately only when the others are not wanted.
 *
 * tfjs calls the gradient closure of an input only when that input lies on a path from the
 * differentiated tensors (xs) to y, but a gradient function cannot see which inputs those are
 * before it is called — so a kernel that computes two gradients more cheaply together than
 * apart (the warp's image and field gradients share their interpolation weights and reads) must
 * guess. This module records the xs of every `tf.grads` / `tf.grad` / `tf.valueAndGrad(s)` /
 * `tf.variableGrads` / optimiser step (they all run `engine.gradients`) and answers, from the
 * recorded tape, whether a tensor depends on them. A wrong answer costs time, never values:
 * the closures compute what they are asked for.
 */
import { tf } from './tf.js';

interface Frame {
  xs: tf.Tensor[];
  /** Data ids of the xs and of every tape output that depends on them (computed on first use). */
  reach?: Set<object>;
}

interface TapeNodeLike {
  inputs: Record<string, tf.Tensor>;
  outputs: tf.Tensor[];
}

interface EngineLike {
  gradients: (...args: unknown[]) => unknown;
  state: { activeTape: TapeNodeLike[] | null };
  regkitGradTargets?: boolean;
}

const frames: Frame[] = [];

/** Wraps the engine's `gradients` once, so that each call's xs are known while it runs. */
export function installGradTargets(): void {
  const engine = tf.engine() as unknown as EngineLike;
  if (engine.regkitGradTargets) return;
  const gradients = engine.gradients;
  engine.gradients = function (this: unknown, ...args: unknown[]) {
    frames.push({ xs: (args[1] as tf.Tensor[]) ?? [] });
    try {
      return gradients.apply(this, args);
    } finally {
      frames.pop();
    }
  };
  engine.regkitGradTargets = true;
}

/**
 * True when `t` may depend on the xs of the innermost running gradient computation (by data
 * id, so the clones tfjs saves for backward passes count as their originals), or when no
 * gradient computation is known to be running (the safe answer).
 */
export function mayNeedGradient(t: tf.Tensor): boolean {
  const frame = frames[frames.length - 1];
  const tape = (tf.engine() as unknown as EngineLike).state.activeTape;
  if (!frame || !tape) return true;
  if (!frame.reach) {
    const reach = new Set<object>(frame.xs.map((x) => x.dataId));
    for (const node of tape) {
      if (Object.values(node.inputs).some((i) => i && reach.has(i.dataId))) {
        for (const o of node.outputs) reach.add(o.dataId);
      }
    }
    frame.reach = reach;
  }
  return frame.reach.has(t.dataId);
}
