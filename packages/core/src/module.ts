import { tf } from './tf.js';
import { fail, fmtShape } from './validate.js';

/** Named weights of a {@link Module}: `'/'`-joined paths such as `'enc0/conv/kernel'`. */
export type NamedWeights = Record<string, tf.Tensor>;

/**
 * Base class of every trainable regkit network part: owns named `tf.Variable`s and child
 * modules, so weights can be listed, saved, loaded and disposed as one tree, whichever
 * package defined the parts (a MINE estimator in a VoxelMorph model, DDWConv subnets in an
 * INN). Subclasses create weights in their constructor with {@link Module.addWeight} and
 * children with {@link Module.addModule}; weight paths are the names joined by `'/'`.
 *
 * @example
 * ```ts
 * class Affine extends Module {
 *   readonly scale = this.addWeight('scale', tf.ones([1]));
 *   apply(x: tf.Tensor) { return tf.mul(x, this.scale); }
 * }
 * ```
 */
export abstract class Module {
  private readonly ownWeights = new Map<string, tf.Variable>();
  private readonly childModules = new Map<string, Module>();
  private weightsDisposed = false;

  /** Registers `initial` (taken over, not copied) as the variable `name` of this module. */
  protected addWeight(name: string, initial: tf.Tensor, trainable = true): tf.Variable {
    this.checkName(name);
    // unnamed: tfjs variable names are global, two models must not collide
    const v = tf.variable(initial, trainable);
    initial.dispose();
    this.ownWeights.set(name, v);
    return v;
  }

  /** Registers `child` as the sub-module `name`; its weights become `name/...`. */
  protected addModule<M extends Module>(name: string, child: M): M {
    this.checkName(name);
    this.childModules.set(name, child);
    return child;
  }

  private checkName(name: string): void {
    if (!name || name.includes('/')) {
      fail(
        this.constructor.name,
        `weight or module name must be non-empty without '/', got '${name}'`,
      );
    }
    if (this.ownWeights.has(name) || this.childModules.has(name)) {
      fail(this.constructor.name, `duplicate weight or module name '${name}'`);
    }
  }

  /** Every weight of this module and its children as `[path, variable]`, in creation order. */
  namedVariables(): Array<[string, tf.Variable]> {
    const out: Array<[string, tf.Variable]> = [];
    for (const [name, v] of this.ownWeights) out.push([name, v]);
    for (const [name, child] of this.childModules) {
      for (const [path, v] of child.namedVariables()) out.push([`${name}/${path}`, v]);
    }
    return out;
  }

  /** The trainable variables, for `optimizer.minimize(f, false, model.trainableVariables)`. */
  get trainableVariables(): tf.Variable[] {
    return this.namedVariables()
      .filter(([, v]) => v.trainable)
      .map(([, v]) => v);
  }

  /** Number of scalar weights (trainable or not). */
  get parameterCount(): number {
    return this.namedVariables().reduce((n, [, v]) => n + v.size, 0);
  }

  /** Copies of every weight by path (the caller disposes them). */
  getWeights(): NamedWeights {
    const out: NamedWeights = {};
    for (const [path, v] of this.namedVariables()) out[path] = tf.clone(v);
    return out;
  }

  /**
   * Assigns weights by path. Every weight of the module must be given with its exact shape
   * unless `strict` is false (then missing paths keep their values); unknown paths always
   * throw. The given tensors are not disposed.
   */
  setWeights(weights: NamedWeights, strict = true): void {
    const fn = `${this.constructor.name}.setWeights`;
    const own = new Map(this.namedVariables());
    for (const path of Object.keys(weights)) {
      if (!own.has(path)) fail(fn, `unknown weight '${path}'`);
    }
    for (const [path, v] of own) {
      const w = weights[path];
      if (!w) {
        if (strict) fail(fn, `weight '${path}' ${fmtShape(v.shape)} is missing`);
        continue;
      }
      if (w.shape.length !== v.shape.length || w.shape.some((s, i) => s !== v.shape[i])) {
        fail(fn, `weight '${path}' must have shape ${fmtShape(v.shape)}, got ${fmtShape(w.shape)}`);
      }
    }
    for (const [path, v] of own) {
      const w = weights[path];
      if (w) tf.tidy(() => v.assign(w.dtype === v.dtype ? w : tf.cast(w, v.dtype)));
    }
  }

  /** Frees every variable of this module and its children; the module is unusable after. */
  dispose(): void {
    if (this.weightsDisposed) return;
    this.weightsDisposed = true;
    for (const v of this.ownWeights.values()) v.dispose();
    for (const child of this.childModules.values()) child.dispose();
  }
}
