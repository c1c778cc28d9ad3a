import { fail, type Module, tf } from '@regkit/core';
import { createVoxelMorph, type VoxelMorphOptions } from './voxelmorph.js';
import { nodeModule, readWeights, saveWeights } from './weights.js';

/** What a trained network directory says about itself (`model.json`'s user metadata). */
export interface NetworkMetadata {
  /** The method, e.g. `'voxelmorph'`: which factory rebuilds the model. */
  method: string;
  /** The options of that factory (`createVoxelMorph(options)`, ...). */
  options: Record<string, unknown>;
  /** Spatial shape the network was trained on; inputs are resampled to it. */
  inputShape: number[];
  /** Intensity normalisation of the inputs: rescale [lower, upper] percentiles to [0, 1]. */
  normalisation?: { lower: number; upper: number };
  /** Free text: data, steps, command that trained it. */
  description?: string;
  [key: string]: unknown;
}

/** The deformations a network predicts for one pair. */
export interface NetworkPrediction {
  /** Displacement warping moving onto fixed: warp(moving, forward) ≈ fixed. */
  forward: tf.Tensor;
  /** Displacement of the inverse deformation, when the method gives one. */
  inverse?: tf.Tensor;
}

/** A trained registration network loaded from a directory. */
export interface RegistrationNetwork {
  metadata: NetworkMetadata;
  model: Module;
  /**
   * Registers `moving` to `fixed` (`[1, ...inputShape, 1]`, normalised as the metadata says):
   * returns tensors the caller disposes.
   */
  predict(moving: tf.Tensor, fixed: tf.Tensor): NetworkPrediction;
  /** Frees the weights. */
  dispose(): void;
}

/** Rebuilds a model of one method from its options. */
export type NetworkBuilder = (options: Record<string, unknown>) => {
  model: Module;
  predict(moving: tf.Tensor, fixed: tf.Tensor): NetworkPrediction;
};

const builders = new Map<string, NetworkBuilder>();

/**
 * Makes `loadRegistrationNetwork` able to rebuild networks of `method` (the package registers
 * its own methods; other packages can add theirs).
 */
export function registerNetworkBuilder(method: string, builder: NetworkBuilder): void {
  builders.set(method, builder);
}

/**
 * The trained weights shipped with this package (in its `weights/` folder), by method, as
 * URLs relative to this module (a `file:` URL in Node.js, an http(s) one where a bundler
 * serves the package's files): a 2D SITReg trained by examples/sitreg, a 2D FIRE (ITK T1 → PD)
 * trained by examples/fire and a 2D and a 3D MASR-Net feature extractor (`masrnet`, `masrnet-3d`)
 * trained by examples/dns (see
 * their READMEs for the data and the figures). No Node.js built-in is imported to state them, so the package
 * bundles for a browser.
 */
export const BUNDLED_WEIGHTS: Readonly<Record<string, string>> = {
  sitreg: new URL('../weights/sitreg-2d', import.meta.url).href,
  fire: new URL('../weights/fire-2d', import.meta.url).href,
  masrnet: new URL('../weights/masrnet-2d', import.meta.url).href,
  'masrnet-3d': new URL('../weights/masrnet-3d', import.meta.url).href,
};

/**
 * The directory of the bundled weights of `method` in Node.js (a file path), or null when
 * there are none or they are not on disk.
 */
export async function bundledWeights(method: string): Promise<string | null> {
  const url = BUNDLED_WEIGHTS[method];
  if (!url?.startsWith('file:')) return null;
  const { fileURLToPath } = await nodeModule<typeof import('node:url')>('node:url');
  const { access } = await nodeModule<typeof import('node:fs/promises')>('node:fs/promises');
  const dir = fileURLToPath(url);
  return access(`${dir}/model.json`).then(
    () => dir,
    () => null,
  );
}

/** Methods `loadRegistrationNetwork` can rebuild. */
export function networkMethods(): string[] {
  return [...builders.keys()].sort();
}

registerNetworkBuilder('voxelmorph', (options) => {
  const model = createVoxelMorph(options as unknown as VoxelMorphOptions);
  return {
    model,
    predict: (moving, fixed) => {
      const out = model.apply(moving, fixed);
      const kept = [out.forward, out.inverse];
      tf.dispose(
        [out.warped, out.velocity, out.mean, out.logVariance].filter(
          (t): t is tf.Tensor => !!t && !kept.includes(t),
        ),
      );
      return out.inverse
        ? { forward: out.forward, inverse: out.inverse }
        : { forward: out.forward };
    },
  };
});

function checkMetadata(fn: string, where: string, m: Partial<NetworkMetadata>): NetworkMetadata {
  if (typeof m.method !== 'string' || !builders.has(m.method)) {
    fail(
      fn,
      `${where}: 'method' must be one of ${networkMethods().join(', ')}, got ${JSON.stringify(m.method)}`,
    );
  }
  if (typeof m.options !== 'object' || m.options === null) {
    fail(fn, `${where}: 'options' must be the options object of the ${m.method} factory`);
  }
  const shape = m.inputShape;
  if (
    !Array.isArray(shape) ||
    (shape.length !== 2 && shape.length !== 3) ||
    shape.some((s) => !Number.isInteger(s) || s < 1)
  ) {
    fail(
      fn,
      `${where}: 'inputShape' must be 2 or 3 positive integers, got ${JSON.stringify(shape)}`,
    );
  }
  return m as NetworkMetadata;
}

/**
 * Saves a trained network with what is needed to rebuild it: `model.json` (weights manifest
 * plus {@link NetworkMetadata}) and `weights.bin` in `dir`, written atomically.
 *
 * @example
 * ```ts
 * await saveRegistrationNetwork('weights/vxm', model, {
 *   method: 'voxelmorph',
 *   options: { ndim: 2, probabilistic: true },
 *   inputShape: [96, 112],
 * });
 * ```
 */
export async function saveRegistrationNetwork(
  dir: string,
  model: Module,
  metadata: NetworkMetadata,
): Promise<void> {
  const m = checkMetadata('saveRegistrationNetwork', dir, metadata);
  await saveWeights(model, dir, { ...m });
}

/**
 * Loads a network saved by {@link saveRegistrationNetwork}: rebuilds the model of its method
 * from the saved options and loads the weights (every path and shape must match).
 *
 * @example
 * ```ts
 * const net = await loadRegistrationNetwork('weights/vxm');
 * const { forward } = net.predict(moving, fixed); // [1, ...inputShape, ndim]
 * ```
 */
export async function loadRegistrationNetwork(dir: string): Promise<RegistrationNetwork> {
  const fn = 'loadRegistrationNetwork';
  const { access } = await nodeModule<typeof import('node:fs/promises')>('node:fs/promises');
  await access(`${dir}/model.json`).catch(() => fail(fn, `${dir} has no model.json`));
  const { weights, metadata: raw } = await readWeights(dir);
  let metadata: NetworkMetadata;
  let built: ReturnType<NetworkBuilder>;
  try {
    metadata = checkMetadata(fn, `${dir}/model.json`, raw as Partial<NetworkMetadata>);
    built = builders.get(metadata.method)!(metadata.options);
    try {
      built.model.setWeights(weights);
    } catch (e) {
      built.model.dispose();
      fail(fn, `${dir} does not fit a ${metadata.method} model: ${(e as Error).message}`);
    }
  } finally {
    tf.dispose(Object.values(weights));
  }
  return {
    metadata,
    model: built.model,
    predict: built.predict,
    dispose: () => built.model.dispose(),
  };
}
