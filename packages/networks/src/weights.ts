import { fail, type Module, type NamedWeights, RegkitError, tf } from '@regkit/core';

type Fs = typeof import('node:fs/promises');
type Path = typeof import('node:path');

/** Imports a Node built-in by a name bundlers cannot follow (weights, checkpoints: Node.js only). */
export async function nodeModule<T>(name: string): Promise<T> {
  if (typeof process === 'undefined' || !process.versions?.node) {
    throw new RegkitError(
      `${name} is needed to read and write weight directories and checkpoints (Node.js only)`,
    );
  }
  return (await import(/* webpackIgnore: true */ /* @vite-ignore */ name)) as T;
}

/**
 * Writes `bytes` to `path` atomically: a temporary file in the same directory, then a
 * rename, so a kill leaves either the old file or the new one, never a partial one.
 */
export async function writeFileAtomic(path: string, bytes: Uint8Array | string): Promise<void> {
  const fs = await nodeModule<Fs>('node:fs/promises');
  const p = await nodeModule<Path>('node:path');
  const tmp = p.join(
    p.dirname(path),
    `.${p.basename(path)}.${process.pid}.${Math.random().toString(36).slice(2, 10)}.tmp`,
  );
  try {
    const handle = await fs.open(tmp, 'w');
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, path);
  } catch (e) {
    await fs.unlink(tmp).catch(() => undefined);
    throw e;
  }
}

/** The `model.json` of a weight directory (tfjs `ModelArtifacts` layout). */
export interface WeightsJson {
  format: 'regkit-weights';
  generatedBy: string;
  /** Free-form description of what the weights belong to (model options, training state). */
  userDefinedMetadata?: Record<string, unknown>;
  weightsManifest: Array<{ paths: string[]; weights: tf.io.WeightsManifestEntry[] }>;
}

/**
 * A tfjs IO handler for a directory holding `model.json` and one binary shard
 * (`weights.bin`, or `shardName`): `save` writes the shard, then `model.json` (each
 * atomically, so `model.json` always names a complete shard); `load` reads both back.
 * Node.js only. Used by {@link saveWeights} and {@link loadWeights}; usable with any tfjs
 * API that takes an `IOHandler`.
 */
export function directoryHandler(dir: string, shardName = 'weights.bin'): tf.io.IOHandler {
  return {
    async save(artifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> {
      const fs = await nodeModule<Fs>('node:fs/promises');
      const p = await nodeModule<Path>('node:path');
      await fs.mkdir(dir, { recursive: true });
      const data = artifacts.weightData
        ? new Uint8Array(
            tf.io.concatenateArrayBuffers(artifacts.weightData as ArrayBuffer | ArrayBuffer[]),
          )
        : new Uint8Array(0);
      await writeFileAtomic(p.join(dir, shardName), data);
      const json: WeightsJson = {
        format: 'regkit-weights',
        generatedBy: artifacts.generatedBy ?? '@regkit/networks',
        userDefinedMetadata: artifacts.userDefinedMetadata as Record<string, unknown> | undefined,
        weightsManifest: [{ paths: [shardName], weights: artifacts.weightSpecs ?? [] }],
      };
      await writeFileAtomic(p.join(dir, 'model.json'), `${JSON.stringify(json, null, 1)}\n`);
      return {
        modelArtifactsInfo: {
          dateSaved: new Date(),
          modelTopologyType: 'JSON',
          weightDataBytes: data.byteLength,
          weightSpecsBytes: JSON.stringify(json.weightsManifest).length,
        },
      };
    },
    async load(): Promise<tf.io.ModelArtifacts> {
      const fs = await nodeModule<Fs>('node:fs/promises');
      const p = await nodeModule<Path>('node:path');
      const jsonPath = p.join(dir, 'model.json');
      let json: WeightsJson;
      try {
        json = JSON.parse(await fs.readFile(jsonPath, 'utf8')) as WeightsJson;
      } catch (e) {
        throw new RegkitError(`cannot read weights ${jsonPath}: ${(e as Error).message}`);
      }
      if (json.format !== 'regkit-weights' || !Array.isArray(json.weightsManifest)) {
        throw new RegkitError(
          `${jsonPath} is not a regkit weights file (format ${JSON.stringify(json.format)})`,
        );
      }
      const specs: tf.io.WeightsManifestEntry[] = [];
      const buffers: ArrayBuffer[] = [];
      for (const group of json.weightsManifest) {
        specs.push(...group.weights);
        for (const shard of group.paths) {
          const bytes = await fs.readFile(p.join(dir, shard));
          buffers.push(
            bytes.buffer.slice(
              bytes.byteOffset,
              bytes.byteOffset + bytes.byteLength,
            ) as ArrayBuffer,
          );
        }
      }
      const weightData = tf.io.concatenateArrayBuffers(buffers);
      const expected = specs.reduce(
        (n, s) =>
          n +
          s.shape.reduce((a, b) => a * b, 1) *
            (s.dtype === 'float32' || s.dtype === 'int32' ? 4 : 1),
        0,
      );
      if (weightData.byteLength !== expected) {
        throw new RegkitError(
          `${dir}: the weight shards hold ${weightData.byteLength} bytes but model.json describes ${expected}`,
        );
      }
      return {
        weightSpecs: specs,
        weightData,
        userDefinedMetadata: json.userDefinedMetadata as Record<string, object> | undefined,
        generatedBy: json.generatedBy,
      };
    },
  };
}

/** Encodes named tensors into tfjs model artifacts. */
export async function encodeNamedWeights(
  weights: NamedWeights,
  metadata?: Record<string, unknown>,
): Promise<tf.io.ModelArtifacts> {
  const { data, specs } = await tf.io.encodeWeights(weights);
  return {
    weightSpecs: specs,
    weightData: data,
    userDefinedMetadata: metadata as Record<string, object> | undefined,
    generatedBy: '@regkit/networks',
  };
}

/**
 * Saves every weight of `module` (by path) to `dir` as `model.json` + `weights.bin`,
 * with optional metadata (e.g. the model's options). Node.js only.
 *
 * @example
 * ```ts
 * await saveWeights(model, 'weights/vxm', { options: { ndim: 2 } });
 * ```
 */
export async function saveWeights(
  module: Module,
  dir: string,
  metadata?: Record<string, unknown>,
): Promise<void> {
  const weights = module.getWeights();
  try {
    await directoryHandler(dir).save!(await encodeNamedWeights(weights, metadata));
  } finally {
    tf.dispose(Object.values(weights));
  }
}

/** Reads the named tensors and metadata of a weight directory (the caller disposes them). */
export async function readWeights(
  dir: string,
): Promise<{ weights: NamedWeights; metadata: Record<string, unknown> }> {
  const artifacts = await directoryHandler(dir).load!();
  const weights = tf.io.decodeWeights(
    artifacts.weightData as ArrayBuffer,
    artifacts.weightSpecs ?? [],
  ) as NamedWeights;
  return { weights, metadata: (artifacts.userDefinedMetadata ?? {}) as Record<string, unknown> };
}

/**
 * Loads weights saved by {@link saveWeights} into `module` (same architecture: every
 * path and shape must match) and returns the saved metadata.
 */
export async function loadWeights(module: Module, dir: string): Promise<Record<string, unknown>> {
  const { weights, metadata } = await readWeights(dir);
  try {
    module.setWeights(weights);
  } catch (e) {
    fail('loadWeights', `${dir} does not fit this model: ${(e as Error).message}`);
  } finally {
    tf.dispose(Object.values(weights));
  }
  return metadata;
}
