import { basename } from 'node:path';
import { RegkitError, resizeField, resizeImage, resizeLinear, tf, withValues } from '@regkit/core';
import {
  encodeItkAffine,
  encodePng,
  NIFTI_INTEGER_RANGES,
  type NiftiWriteDatatype,
  renderRegistrationFigure,
  type Volume,
  voxelAffineToItk,
  writeNifti,
} from '@regkit/io';
import { foldingPercent } from '@regkit/metrics';
import {
  BUNDLED_WEIGHTS,
  bundledWeights,
  loadMasrNet,
  loadRegistrationNetwork,
  type MasrNet,
  networkMethods,
  type RegistrationNetwork,
} from '@regkit/networks';
import {
  type AffineTransform,
  dnsRegistrationOptions,
  normalizeIntensity,
  type RegisterAffineOptions,
  type RegisterImagesOptions,
  registerAffine,
  registerImages,
  type SimilarityName as Similarity,
  type TransformModel,
} from '@regkit/register';
import {
  assertRegistrable,
  expandField,
  fieldOfViewOverlap,
  foregroundOverlap,
  imageStats,
  squeezeAxis,
  thinAxis,
} from './checks.js';
import { UsageError } from './errors.js';
import { assertLabelMap } from './evaluate.js';
import {
  checkOutputs,
  disposeVolumes,
  encodeImageFor,
  OutputTransaction,
  readInput,
  stagedFieldFor,
  stagedImageFor,
} from './files.js';
import { deformablePart, expandAffine, sameGrid, warpThroughAffines } from './geometry.js';
import type { Progress } from './progress.js';

/** Options of the `register` command (the parsed command line). */
export interface RegisterCommandOptions {
  fixed: string;
  moving: string;
  out: string;
  field?: string;
  inverseField?: string | boolean;
  /** `lncc`, `mi`, `mind`, `mse`, or `dns` (MASR-Net features: `weights`, else the bundled 2D network). */
  similarity?: string;
  /**
   * `rigid` or `affine`: only that linear stage; `velocity` or `displacement`: only that
   * deformable stage (unless `affine` names a linear stage); absent: the default pipeline,
   * an affine stage then a velocity field.
   */
  transform?: string;
  /**
   * The linear stage before the deformable one: `affine`, `rigid`, or `none`/false (skip it).
   * Default: `affine` when `transform` is absent, none when it names a deformable model.
   */
  affine?: string | boolean;
  /** Iterations per level of the linear stage of the pipeline (coarsest first). */
  affineIterations?: number[];
  /** Where to write the linear stage as an ITK/ANTs affine (`.txt`, `.tfm` or `.mat`). */
  affineOut?: string;
  /** Where to write the deformable part alone (ANTs' `1Warp`; `--field` is the total). */
  deformableField?: string;
  levels?: number;
  iterations?: number[];
  learningRate?: number;
  regularisation?: number;
  skipFinest?: number;
  /** The most voxels a level is optimised on (`registerImages`' `maxVoxels`); 0: no cap. */
  maxVoxels?: number;
  /** `mi`/`mind`: voxels sampled per iteration of the deformable stage (`registerImages`' `samples`); 0: every voxel. */
  samples?: number;
  seed?: number;
  movingLabels?: string;
  outLabels?: string;
  png?: string;
  force?: boolean;
  /** Register with a trained network of this method instead of instance optimisation. */
  method?: string;
  /**
   * Directory of the trained network (`saveRegistrationNetwork`), with `method`; with
   * `similarity: 'dns'`, of the MASR-Net (`saveMasrNet`; default: the bundled one).
   */
  weights?: string;
}

/** What `register` reports (printed with `--json`). */
export interface RegisterSummary {
  fixed: string;
  moving: string;
  /** `'instance'` (optimisation) or the network method. */
  method: string;
  /** The network directory, when a network registered. */
  weights?: string;
  similarity: Similarity | 'dns';
  /** `--transform`: the deformable model of the pipeline, or the linear stage run alone. */
  transform: TransformModel | AffineTransform;
  /** The stages that ran, in order: e.g. `['affine', 'velocity']`, `['rigid']`, `['velocity']`. */
  pipeline: string[];
  /**
   * The linear stage's result, when one ran: fixed voxel x ↦ A x + t (rows, `[nd][nd + 1]`),
   * the fixed-grid position where the moving image (mapped through both affines) is sampled.
   */
  affine?: number[][];
  resampled: boolean;
  shape: number[];
  levels: { shape: number[]; similarity: number; iterations: number }[];
  foldingPercent: number;
  seconds: number;
  outputs: Record<string, string>;
  /** The axis along which the fixed grid is one voxel thick, when it was registered as 2D. */
  registeredAs2d?: number;
  /** Warnings about a registration that may be meaningless (also passed to `onWarning`). */
  warnings: string[];
}

/**
 * The on-disk type that holds labels of this range exactly: `preferred` (the input's
 * datatype) when it does, else for integers the smallest of uint8, int16, int32 that holds
 * the range, and float32 for non-integer labels or integers beyond int32 (the labels are
 * float32 values in memory, so float32 represents every one of them).
 */
export function labelDatatype(
  max: number,
  min: number,
  integer = true,
  preferred?: string,
): NiftiWriteDatatype {
  if (preferred === 'float32' || preferred === 'float64') return preferred;
  if (integer) {
    const range = preferred ? NIFTI_INTEGER_RANGES[preferred as NiftiWriteDatatype] : undefined;
    if (range && min >= range[0] && max <= range[1]) return preferred as NiftiWriteDatatype;
    for (const t of ['uint8', 'int16', 'int32'] as const) {
      const [lo, hi] = NIFTI_INTEGER_RANGES[t]!;
      if (min >= lo && max <= hi) return t;
    }
  }
  return 'float32';
}

/** Default name of the inverse field: `field.nii.gz` → `field_inverse.nii.gz` (`.mha`, `.nrrd` alike). */
export function inverseFieldPath(field: string): string {
  const m = /^(.*?)(\.nii(\.gz)?|\.mha|\.nrrd)?$/i.exec(field)!;
  return `${m[1]}_inverse${m[2] ?? '.nii.gz'}`;
}

/**
 * The datatype that keeps every value of a label map ({@link labelDatatype}; `preferred` is
 * the datatype the labels were read in).
 */
export async function labelDatatypeOf(
  volume: Volume,
  preferred?: string,
): Promise<NiftiWriteDatatype> {
  // read in place: no copy of the volume
  const [lo, hi, integer] = withValues(volume.data, (v) => {
    let lo = 0;
    let hi = 0;
    let integer = true;
    for (let i = 0; i < v.length; i++) {
      const x = v[i]!;
      if (x < lo) lo = x;
      if (x > hi) hi = x;
      if (integer && !Number.isInteger(x)) integer = false;
    }
    return [lo, hi, integer] as const;
  });
  return labelDatatype(hi, lo, integer, preferred);
}

/**
 * The uncompressed bytes of a label map, every value kept ({@link labelDatatypeOf}), in the
 * format of `path` (NIfTI by default; see `encodeImageFor`).
 */
export async function encodeLabels(
  volume: Volume,
  preferred?: string,
  path = 'labels.nii',
): Promise<Uint8Array> {
  return encodeImageFor(path, volume, await labelDatatypeOf(volume, preferred));
}

/** Writes a label map, every value kept ({@link labelDatatypeOf}). */
export async function writeLabels(path: string, volume: Volume, preferred?: string): Promise<void> {
  await writeNifti(path, volume, { datatype: await labelDatatypeOf(volume, preferred) });
}

/** What a caller running many registrations shares between them (`regkit batch`). */
export interface RegisterContext {
  /**
   * Supplies the network saved in `weights` (a directory) instead of loading it for this
   * registration; the caller owns it (it is not disposed here), so one load serves many
   * registrations.
   */
  network?: (weights: string) => Promise<RegistrationNetwork>;
}

/**
 * Registers normalised `moving` to `fixed` (`[1, ...S, 1]`, same grid) with the trained
 * network in `weights` (loaded here, or supplied by `shared` and then not disposed): inputs
 * resampled to the network's grid, the predicted displacement(s) resampled back to S
 * (vectors rescaled).
 */
async function registerWithNetwork(
  method: string,
  weights: string,
  fixed: tf.Tensor,
  moving: tf.Tensor,
  normalise: (image: tf.Tensor, lower: number, upper: number) => Promise<tf.Tensor>,
  fixedRaw: tf.Tensor,
  movingRaw: tf.Tensor,
  shared?: (weights: string) => Promise<RegistrationNetwork>,
): Promise<{ field: tf.Tensor; inverseField?: tf.Tensor }> {
  const net = shared ? await shared(weights) : await loadRegistrationNetwork(weights);
  const toDispose: tf.Tensor[] = [];
  try {
    const { inputShape, normalisation } = net.metadata;
    if (net.metadata.method !== method) {
      throw new UsageError(
        `--weights ${weights} holds a ${net.metadata.method} network, not ${method}`,
      );
    }
    const shape = fixed.shape.slice(1, -1);
    if (shape.length !== inputShape.length) {
      throw new UsageError(
        `the ${method} network in ${weights} registers ${inputShape.length}D images (${inputShape.join('×')}); the images are ${shape.length}D (${shape.join('×')})`,
      );
    }
    let f = fixed;
    let m = moving;
    if (normalisation) {
      f = await normalise(fixedRaw, normalisation.lower, normalisation.upper);
      m = await normalise(movingRaw, normalisation.lower, normalisation.upper);
      toDispose.push(f, m);
    }
    const same = tf.util.arraysEqual(shape, inputShape);
    return tf.tidy(() => {
      const fi = same ? f : resizeImage(f, inputShape);
      const mi = same ? m : resizeImage(m, inputShape);
      const p = net.predict(mi, fi);
      const back = (u: tf.Tensor) => (same ? u : resizeField(u, shape));
      return p.inverse
        ? { field: back(p.forward), inverseField: back(p.inverse) }
        : { field: back(p.forward) };
    });
  } finally {
    tf.dispose(toDispose);
    if (!shared) net.dispose();
  }
}

/**
 * `regkit register`: registration of a moving image to a fixed one by instance optimisation
 * or, with `method` and `weights`, by a trained network, in the fixed image's grid (the
 * moving image is mapped through both affines when the grids differ). Instance optimisation
 * runs the stages of {@link registerPlan}: by default an affine stage (`registerAffine`) then
 * a velocity field (`registerImages`). Writes the warped image and, when asked, the ITK/ANTs
 * displacement field (always the total: affine and deformable composed), its inverse, the
 * affine as an ITK/ANTs transform file (`affineOut`), the deformable part alone
 * (`deformableField`), warped labels and a PNG preview.
 *
 * Every check that needs no registration comes first: outputs (folder, extension, existing
 * files), shapes and channels, and the images themselves. Refused (usage error): images with
 * non-finite values, constant images (all zero included), a moving image that does not
 * overlap the fixed grid in space or is constant once resampled onto it, and images thinner
 * than one voxel on two axes. A 3D image one voxel thick along one axis is registered as 2D on
 * the other two (the field has a zero component along that axis). Warned (`onWarning`, and in
 * the summary): a moving image covering less than a quarter of the fixed grid, and
 * foregrounds (above 1 % of each image's range) that do not overlap. The outputs are written
 * only once all of them are computed, together or not at all ({@link OutputTransaction}).
 * `context` shares state between registrations (a network loaded once: {@link RegisterContext}).
 */
export async function registerCommand(
  o: RegisterCommandOptions,
  progress: Progress,
  onWarning?: (message: string) => void,
  context: RegisterContext = {},
): Promise<RegisterSummary> {
  const similarityArg = (o.similarity ?? 'lncc') as Similarity | 'dns';
  if (!['lncc', 'mi', 'mind', 'mse', 'dns'].includes(similarityArg)) {
    throw new UsageError(`--similarity must be lncc, mi, mind, mse or dns, got '${o.similarity}'`);
  }
  const dns = similarityArg === 'dns';
  // the name registerImages and the progress lines see ('dns' passes a loss function)
  const similarity = (dns ? 'mse' : similarityArg) as Similarity;
  if (dns && o.method) {
    throw new UsageError('--similarity dns applies to instance optimisation, not to --method');
  }
  const dnsWeights = dns ? (o.weights ?? (await bundledWeights('masrnet'))) : null;
  if (dns && !dnsWeights) {
    throw new UsageError(
      '--similarity dns needs --weights <MASR-Net dir>: the bundled MASR-Net weights are not on disk',
    );
  }
  const plan = registerPlan(o);
  if (o.maxVoxels !== undefined && !(o.maxVoxels === 0 || o.maxVoxels >= 64)) {
    throw new UsageError(`--max-voxels must be 0 (no cap) or ≥ 64, got ${o.maxVoxels}`);
  }
  if (o.samples !== undefined && !(o.samples === 0 || o.samples >= 64)) {
    throw new UsageError(`--samples must be 0 (every voxel) or ≥ 64, got ${o.samples}`);
  }
  if (o.method && !o.weights) {
    const bundled = await bundledWeights(o.method);
    if (!bundled) {
      throw new UsageError(
        `--method ${o.method} needs --weights <dir> (weights are bundled for: ${Object.keys(
          BUNDLED_WEIGHTS,
        )
          .filter((k) => networkMethods().includes(k))
          .join(', ')})`,
      );
    }
    o = { ...o, weights: bundled };
  }
  if (o.weights && !o.method && !dns) {
    throw new UsageError('--weights needs --method <name> (or --similarity dns)');
  }
  if (o.outLabels && !o.movingLabels) throw new UsageError('--out-labels needs --moving-labels');
  if (o.movingLabels && !o.outLabels) throw new UsageError('--moving-labels needs --out-labels');
  if (o.inverseField && !o.field && typeof o.inverseField !== 'string') {
    throw new UsageError('--inverse-field without a path needs --field (it is written beside it)');
  }
  const inversePath =
    typeof o.inverseField === 'string'
      ? o.inverseField
      : o.inverseField && o.field
        ? inverseFieldPath(o.field)
        : undefined;
  const outputs = {
    '--out': o.out,
    '--field': o.field,
    '--affine-out': o.affineOut,
    '--deformable-field': o.deformableField,
    '--inverse-field': inversePath,
    '--out-labels': o.outLabels,
    '--png': o.png,
  };
  checkOutputs(
    outputs,
    { '--fixed': o.fixed, '--moving': o.moving, '--moving-labels': o.movingLabels },
    !!o.force,
  );
  const t0 = performance.now();
  const warnings: string[] = [];
  const warn = (message: string) => {
    warnings.push(message);
    onWarning?.(message);
  };
  const fixed = await readInput('--fixed', o.fixed);
  const moving = await readInput('--moving', o.moving).catch((e: unknown) => {
    disposeVolumes(fixed);
    throw e;
  });
  const labels = o.movingLabels
    ? await readInput('--moving-labels', o.movingLabels).catch((e: unknown) => {
        disposeVolumes(fixed, moving);
        throw e;
      })
    : null;
  const toDispose: tf.Tensor[] = [];
  let masr: MasrNet | null = null;
  try {
    // every check that needs no registration, before registering
    const fs = fixed.data.shape.slice(1, -1);
    const ms = moving.data.shape.slice(1, -1);
    if (fs.length !== ms.length) {
      throw new UsageError(
        `--fixed ${o.fixed} is ${fs.length}D [${fs.join(', ')}] but --moving ${o.moving} is ${ms.length}D [${ms.join(', ')}]`,
      );
    }
    for (const [name, v, path] of [
      ['--fixed', fixed, o.fixed],
      ['--moving', moving, o.moving],
      ['--moving-labels', labels, o.movingLabels],
    ] as const) {
      if (!v) continue;
      const c = v.data.shape[v.data.rank - 1];
      if (c !== 1) throw new UsageError(`${name} ${path} has ${c} channels; register needs one`);
    }
    if (labels && labels.data.rank !== moving.data.rank) {
      throw new UsageError(
        `--moving-labels ${o.movingLabels} is ${labels.data.rank - 2}D but --moving ${o.moving} is ${ms.length}D`,
      );
    }
    if (labels && o.movingLabels) {
      withValues(labels.data, (v) => assertLabelMap('--moving-labels', o.movingLabels!, v));
    }
    const thin = thinAxis('--fixed', o.fixed, fs);
    await assertRegistrable('--fixed', o.fixed, fixed);
    await assertRegistrable('--moving', o.moving, moving);
    const resampled = !sameGrid(fixed, moving);
    if (resampled) {
      const overlap = await fieldOfViewOverlap(moving, fixed);
      if (overlap === 0) {
        throw new UsageError(
          `--moving ${o.moving} and --fixed ${o.fixed} do not overlap in space (their affines place the moving image outside the fixed grid): there is nothing to register`,
        );
      }
      if (overlap < 0.25) {
        warn(
          `--moving ${o.moving} covers only ${(100 * overlap).toFixed(1)} % of the --fixed ${o.fixed} grid; the rest is registered against zeros`,
        );
      }
    }
    const movingOnFixed = resampled ? warpThroughAffines(moving, null, fixed) : null;
    if (movingOnFixed) toDispose.push(movingOnFixed.data);
    const movingData = (movingOnFixed ?? moving).data;
    if (resampled) {
      const s = await imageStats(movingData);
      if (s.max === s.min) {
        throw new UsageError(
          `--moving ${o.moving} is constant (${s.min}) once resampled onto the --fixed ${o.fixed} grid: there is nothing to register`,
        );
      }
    }
    if ((await foregroundOverlap(fixed.data, movingData)) === 0) {
      warn(
        `the foregrounds of --fixed ${o.fixed} and --moving ${o.moving} do not overlap on the fixed grid: the registration has no common structure to align and its result is likely meaningless`,
      );
    }
    // instance optimisation needs only the normalised copies: the raw images are freed as
    // soon as each is normalised (registerImages also frees f and m once its pyramid is
    // built) and read again for the outputs; on a 3D brain that is four full-resolution
    // images less at the peak, and a smaller high-water mark of the wasm heap
    const reread = !o.method && !!plan.deformable && thin < 0;
    const fixedChannels = fixed.data.shape[fixed.data.rank - 1]!;
    let f = await normalizeIntensity(fixed.data);
    toDispose.push(f);
    if (reread) fixed.data.dispose();
    let m = await normalizeIntensity(movingData);
    toDispose.push(m);
    if (reread) moving.data.dispose();
    let fRaw = fixed.data;
    let mRaw = movingData;
    if (thin >= 0) {
      // one voxel thick: registered as 2D on the two other axes
      f = squeezeAxis(f, thin);
      m = squeezeAxis(m, thin);
      fRaw = squeezeAxis(fRaw, thin);
      mRaw = squeezeAxis(mRaw, thin);
      toDispose.push(f, m, fRaw, mRaw);
    }
    let started = false;
    let dnsPreset: RegisterImagesOptions = {};
    if (dnsWeights) {
      masr = (await loadMasrNet(dnsWeights)).model;
      if (masr.ndim !== 2 || masr.channels !== 1) {
        masr.dispose();
        throw new UsageError(
          `--weights ${dnsWeights}: the CLI's dns similarity needs a 2D, one-channel MASR-Net`,
        );
      }
      const net = masr;
      const extractor = { apply: (image: tf.Tensor) => masrFeatures(net, image) };
      // 2D: the optimisation runs at the working size too (its grid capped by maxVoxels),
      // the scale the network and the preset's voxel-unit learning rates were set for
      const shape = f.shape.slice(1, -1);
      const scale = Math.min(1, DNS_WORKING_SIZE / Math.max(...shape));
      const working = shape.length === 2 ? shape.map((s) => Math.round(s * scale)) : shape;
      dnsPreset = dnsRegistrationOptions(working, extractor);
      if (shape.length === 2 && scale < 1) {
        dnsPreset.maxVoxels = working.reduce((a, b) => a * b, 1);
      } else if (shape.length === 3) {
        // 24 feature channels per voxel: the optimisation grid is capped at 2^18 voxels (a
        // 128×128×62 volume at full resolution exceeded the 4 GiB wasm heap); --max-voxels
        // overrides
        dnsPreset.maxVoxels = DNS_MAX_VOXELS_3D;
      }
    }
    const options: RegisterImagesOptions = {
      similarity,
      disposeInputs: reread,
      ...dnsPreset,
      transform: plan.deformable ?? 'velocity',
      affine: plan.linear ?? false,
      inverse: !!inversePath,
      returnVelocity: false,
      onProgress: (p) => {
        if (!started) progress.start('registering', p.total);
        started = true;
        progress.update(
          p.done,
          `level ${p.level}/${p.levels} ${similarityArg} ${p.similarity.toFixed(4)}`,
        );
      },
    };
    if (o.levels !== undefined) options.levels = o.levels;
    if (o.iterations !== undefined) options.iterations = o.iterations;
    if (o.learningRate !== undefined) options.learningRate = o.learningRate;
    if (o.regularisation !== undefined) options.regularisationWeight = o.regularisation;
    if (o.skipFinest !== undefined) options.skipFinest = o.skipFinest;
    if (o.maxVoxels !== undefined) options.maxVoxels = o.maxVoxels === 0 ? Infinity : o.maxVoxels;
    if (o.samples !== undefined) options.samples = o.samples === 0 ? Infinity : o.samples;
    if (o.seed !== undefined) options.seed = o.seed;
    if (o.affineIterations !== undefined) {
      options.affineOptions = { iterations: o.affineIterations };
    }
    let result: {
      field: tf.Tensor;
      inverseField?: tf.Tensor;
      affine?: tf.Tensor;
      levels: { shape: number[]; similarity: number; iterations: number }[];
    };
    if (o.method) {
      progress.start(`registering with ${o.method}`, 1);
      const r = await registerWithNetwork(
        o.method,
        o.weights!,
        f,
        m,
        normalizeIntensity,
        fRaw,
        mRaw,
        context.network,
      );
      progress.update(1, o.method);
      result = { ...r, levels: [] };
      if (inversePath && !r.inverseField) {
        toDispose.push(r.field);
        throw new UsageError(`the ${o.method} network gives no inverse; drop --inverse-field`);
      }
    } else if (!plan.deformable) {
      // --transform rigid|affine: the linear stage alone
      const affineOptions: RegisterAffineOptions = {
        transform: plan.linear!,
        similarity: dnsPreset.similarity ?? affineSimilarity(similarity),
        ...(dnsPreset.features ? { features: dnsPreset.features } : {}),
        inverse: !!inversePath,
        onProgress: (p) => {
          if (!started) progress.start(`registering (${plan.linear})`, p.total);
          started = true;
          progress.update(p.done, `level ${p.level}/${p.levels} ${p.similarity.toFixed(4)}`);
        },
      };
      if (o.levels !== undefined) affineOptions.levels = o.levels;
      if (o.iterations !== undefined) affineOptions.iterations = o.iterations;
      if (o.learningRate !== undefined) affineOptions.learningRate = o.learningRate;
      if (o.seed !== undefined) affineOptions.seed = o.seed;
      const r = await registerAffine(f, m, affineOptions);
      result = {
        field: r.forward,
        affine: r.affine,
        levels: r.levels,
        ...(r.inverse ? { inverseField: r.inverse } : {}),
      };
    } else {
      const r = await registerImages(f, m, options);
      r.velocity?.dispose();
      result = {
        field: r.forward,
        levels: r.levels,
        ...(r.inverse ? { inverseField: r.inverse } : {}),
        ...(r.affine ? { affine: r.affine } : {}),
      };
    }
    progress.stop();
    // the normalised copies (and the moving image resampled onto the fixed grid) are no
    // longer needed: free them before the full-resolution outputs are computed
    tf.dispose([f, m]);
    if (movingOnFixed && !o.method) movingOnFixed.data.dispose();
    if (reread) {
      // from here on the fixed image is only the output grid (its header and shape) unless
      // the figure shows it: a zero image of its shape instead of decoding the file again
      fixed.data = o.png
        ? (await readInput('--fixed', o.fixed)).data
        : tf.zeros([1, ...fs, fixedChannels]);
      moving.data = (await readInput('--moving', o.moving)).data;
    }
    toDispose.push(result.field);
    if (result.inverseField) toDispose.push(result.inverseField);
    if (result.affine) toDispose.push(result.affine);
    // the deformable part alone (ANTs' 1Warp), on the registered grid
    let deformable: tf.Tensor | null = null;
    if (o.deformableField && result.affine) {
      deformable = deformablePart(result.affine, result.field, result.field.shape.slice(1, -1));
      toDispose.push(deformable);
    }
    let affineRows: number[][] | undefined;
    if (result.affine) {
      const rows = (result.affine.arraySync() as number[][][])[0]!;
      affineRows = thin >= 0 ? expandAffine(rows, thin) : rows;
    }
    // the folding of the registered (2D when one voxel thick) field
    const folding = await foldingPercent(result.field);
    if (!Number.isFinite(folding)) {
      throw new RegkitError(`the registration diverged: its field has non-finite values`);
    }
    let field = result.field;
    let inverseField = result.inverseField;
    if (thin >= 0) {
      field = expandField(result.field, fs, thin);
      toDispose.push(field);
      if (inverseField) {
        inverseField = expandField(inverseField, fs, thin);
        toDispose.push(inverseField);
      }
      if (deformable) {
        deformable = expandField(deformable, fs, thin);
        toDispose.push(deformable);
      }
    }
    const warped = warpThroughAffines(moving, field, fixed);
    toDispose.push(warped.data);
    // all outputs are computed before any is written, then written together
    const outputsTx = new OutputTransaction(!!o.force);
    // each output is encoded when it is written (one large buffer at a time)
    outputsTx.stageNifti('--out', o.out, () => stagedImageFor(o.out, warped));
    const written: Record<string, string> = { out: o.out };
    if (o.field) {
      const fieldPath = o.field;
      outputsTx.stageNifti('--field', fieldPath, () => stagedFieldFor(fieldPath, field, fixed));
      written.field = o.field;
    }
    if (o.deformableField && deformable) {
      const part = deformable;
      const partPath = o.deformableField;
      outputsTx.stageNifti('--deformable-field', partPath, () =>
        stagedFieldFor(partPath, part, fixed),
      );
      written.deformableField = o.deformableField;
    }
    if (o.affineOut && affineRows) {
      // the moving image was registered on the fixed grid: world map A_f · a · A_f⁻¹
      const itk = voxelAffineToItk(affineRows, fixed, fixed);
      const format = o.affineOut.toLowerCase().endsWith('.mat') ? 'mat' : 'txt';
      outputsTx.stage('--affine-out', o.affineOut, encodeItkAffine(itk, format));
      written.affineOut = o.affineOut;
    }
    if (inversePath && inverseField) {
      const inverse = inverseField;
      outputsTx.stageNifti('--inverse-field', inversePath, () =>
        stagedFieldFor(inversePath, inverse, fixed),
      );
      written.inverseField = inversePath;
    }
    if (labels && o.outLabels) {
      const warpedLabels = warpThroughAffines(labels, field, fixed, 'nearest');
      toDispose.push(warpedLabels.data);
      outputsTx.stageNifti(
        '--out-labels',
        o.outLabels,
        await encodeLabels(warpedLabels, labels.header.datatype, o.outLabels),
      );
      written.outLabels = o.outLabels;
    }
    if (o.png) {
      // the moving image on the fixed grid (through the affines), before registration
      const before = warpThroughAffines(moving, null, fixed);
      toDispose.push(before.data);
      let movingLabels: Volume | undefined;
      let warpedLabels: Volume | undefined;
      if (labels) {
        movingLabels = warpThroughAffines(labels, null, fixed, 'nearest');
        warpedLabels = warpThroughAffines(labels, field, fixed, 'nearest');
        toDispose.push(movingLabels.data, warpedLabels.data);
      }
      const last = result.levels[result.levels.length - 1];
      const figure = await renderRegistrationFigure(
        {
          fixed,
          moving: before,
          warped,
          field,
          ...(movingLabels && warpedLabels ? { movingLabels, warpedLabels } : {}),
        },
        {
          title: `regkit register: ${basename(o.moving)} → ${basename(o.fixed)} (${o.method ?? plan.pipeline.join(' + ')})`,
          figures: {
            ...(o.method ? {} : { similarity: `${similarity} loss at the finest level` }),
            ...(last && !o.method ? { similarityAfter: last.similarity } : {}),
            foldingPercent: folding,
            seconds: (performance.now() - t0) / 1000,
          },
        },
      );
      outputsTx.stage('--png', o.png, encodePng(figure));
      written.png = o.png;
    }
    await outputsTx.commit();
    return {
      fixed: o.fixed,
      moving: o.moving,
      method: o.method ?? 'instance',
      ...(o.weights ? { weights: o.weights } : {}),
      similarity: similarityArg,
      transform: plan.transform,
      pipeline: o.method ? [o.method] : plan.pipeline,
      ...(affineRows ? { affine: affineRows } : {}),
      resampled,
      shape: fs,
      ...(thin >= 0 ? { registeredAs2d: thin } : {}),
      levels: result.levels.map(({ shape, similarity: s, iterations }) => ({
        shape,
        similarity: s,
        iterations,
      })),
      foldingPercent: folding,
      seconds: (performance.now() - t0) / 1000,
      outputs: written,
      warnings,
    };
  } finally {
    progress.stop();
    masr?.dispose();
    for (const t of toDispose) t.dispose();
    disposeVolumes(fixed, moving, labels);
  }
}

/** The stages `register` runs, from `--transform` and `--affine` (see {@link registerPlan}). */
export interface RegisterPlan {
  /** The linear stage, or null. */
  linear: AffineTransform | null;
  /** The deformable model, or null (a linear stage alone). */
  deformable: TransformModel | null;
  /** The summary's `transform`. */
  transform: TransformModel | AffineTransform;
  /** The stages in order. */
  pipeline: string[];
}

/**
 * The stages of `regkit register` from its options, with usage errors naming the flag for
 * bad values and combinations: no `--transform` → `--affine` (default affine) then velocity;
 * `--transform rigid|affine` → that linear stage alone (`--affine`, `--no-affine`,
 * `--affine-iterations`, `--regularisation`, `--skip-finest` and `--deformable-field` are
 * refused); `--transform velocity|displacement` → that model alone, after the linear stage
 * `--affine rigid|affine` names. `--affine-out` needs a linear stage, `--deformable-field`
 * a linear and a deformable one.
 */
export function registerPlan(o: RegisterCommandOptions): RegisterPlan {
  const t = o.transform;
  if (t !== undefined && !['rigid', 'affine', 'velocity', 'displacement'].includes(t)) {
    throw new UsageError(`--transform must be rigid, affine, velocity or displacement, got '${t}'`);
  }
  const a = o.affine;
  if (a !== undefined && a !== false && a !== true && !['affine', 'rigid', 'none'].includes(a)) {
    throw new UsageError(`--affine must be affine, rigid or none, got '${a}'`);
  }
  if (o.method) {
    for (const [flag, v] of [
      ['--affine', o.affine],
      ['--affine-iterations', o.affineIterations],
      ['--affine-out', o.affineOut],
      ['--deformable-field', o.deformableField],
    ] as const) {
      if (v !== undefined)
        throw new UsageError(`${flag} applies to instance optimisation, not to --method`);
    }
  }
  if (t === 'rigid' || t === 'affine') {
    for (const [flag, v] of [
      [a === false ? '--no-affine' : '--affine', a],
      ['--affine-iterations', o.affineIterations],
      ['--regularisation', o.regularisation],
      ['--skip-finest', o.skipFinest],
      ['--deformable-field', o.deformableField],
    ] as const) {
      if (v !== undefined) {
        throw new UsageError(
          `${flag} does not apply to --transform ${t}, which runs the ${t} stage alone (its options: --levels, --iterations, --learning-rate, --seed, --similarity)`,
        );
      }
    }
    return { linear: t, deformable: null, transform: t, pipeline: [t] };
  }
  // dns: the paper's instance optimisation optimises a displacement field
  const deformable = (t ??
    (o.similarity === 'dns' ? 'displacement' : 'velocity')) as TransformModel;
  const linear: AffineTransform | null =
    a === false || a === 'none'
      ? null
      : a === 'affine' || a === 'rigid'
        ? a
        : t === undefined
          ? 'affine'
          : null;
  if (!linear) {
    const why =
      a === false
        ? '--no-affine'
        : a === 'none'
          ? '--affine none'
          : `--transform ${deformable} alone`;
    for (const [flag, v] of [
      ['--affine-iterations', o.affineIterations],
      ['--affine-out', o.affineOut],
      ['--deformable-field', o.deformableField],
    ] as const) {
      if (v !== undefined) {
        throw new UsageError(
          `${flag} needs an affine stage, but ${why} skips it (add --affine affine or --affine rigid)`,
        );
      }
    }
  }
  return {
    linear,
    deformable,
    transform: deformable,
    pipeline: linear ? [linear, deformable] : [deformable],
  };
}

/** The affine stage's similarity for a deformable one (as `registerImages` chooses). */
function affineSimilarity(similarity: Similarity): 'mi' | 'mind' | 'ncc' {
  return similarity === 'mi' || similarity === 'mind' ? similarity : 'ncc';
}

/** Slices of a 3D volume the 2D MASR-Net maps at once (bounds the memory of its DNS layer). */
const DNS_SLICES_PER_CHUNK = 8;

/**
 * The longest side of the slices the bundled MASR-Net was trained on (96×96 and 96×112
 * slices of 1 mm brains): larger slices are mapped at this scale and the features resized
 * back, so the network sees structures at the size it learnt them.
 */
const DNS_WORKING_SIZE = 112;

/** The largest optimisation grid of `--similarity dns` on 3D volumes (see registerCommand). */
const DNS_MAX_VOXELS_3D = 2 ** 18;

/** `net` on 2D slices `[n, X, Y, 1]`, at the working size when they are larger; `[n, X, Y, F]`. */
function atWorkingSize(net: MasrNet, slices: tf.Tensor): tf.Tensor {
  const shape = slices.shape.slice(1, 3);
  const scale = DNS_WORKING_SIZE / Math.max(...shape);
  if (scale >= 1) return net.apply(slices);
  return tf.tidy(() => {
    const small = resizeImage(
      slices,
      shape.map((s) => Math.max(8, Math.round(s * scale))),
    );
    return resizeLinear(net.apply(small), shape);
  });
}

/**
 * The MASR-Net features of a normalised image `[1, ...S, 1]`: the 2D network on a 2D image;
 * on a 3D volume `[1, X, Y, Z, 1]`, slice by slice along the last axis (Z; the axial one of
 * RAS-like volumes), a few slices at a time, giving `[1, X, Y, Z, F]`.
 */
function masrFeatures(net: MasrNet, image: tf.Tensor): tf.Tensor {
  if (image.rank === 4) return atWorkingSize(net, image);
  const [, X, Y, Z] = image.shape as number[];
  const parts: tf.Tensor[] = [];
  try {
    for (let z0 = 0; z0 < Z!; z0 += DNS_SLICES_PER_CHUNK) {
      const n = Math.min(DNS_SLICES_PER_CHUNK, Z! - z0);
      parts.push(
        tf.tidy(() => {
          const chunk = tf.slice(image, [0, 0, 0, z0, 0], [1, X!, Y!, n, 1]);
          const batch = tf.reshape(tf.transpose(tf.reshape(chunk, [X!, Y!, n]), [2, 0, 1]), [
            n,
            X!,
            Y!,
            1,
          ]);
          const d = atWorkingSize(net, batch); // [n, X, Y, F]
          return tf.transpose(d, [1, 2, 0, 3]); // [X, Y, n, F]
        }),
      );
    }
    const all = tf.concat(parts, 2);
    const out = tf.reshape(all, [1, X!, Y!, Z!, net.featureChannels]);
    all.dispose();
    return out;
  } finally {
    tf.dispose(parts);
  }
}
