import { RegkitError } from '@regkit/core';
import { RegkitIOError } from '@regkit/io';
import { networkMethods } from '@regkit/networks';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { applyCommand } from './apply.js';
import { type BatchOptions, mergeBatch, runBatch } from './batch.js';
import { deformCommand } from './deform.js';
import { type DemoCaseSummary, demoCommand } from './demo.js';
import { EXIT, UsageError } from './errors.js';
import { evalCommand } from './evaluate.js';
import { infoCommand } from './info.js';
import { MANIFEST_COLUMNS } from './manifest.js';
import { createLineProgress, createProgress } from './progress.js';
import { registerCommand } from './register.js';
import { setupBackend } from './runtime.js';

/** Where the command writes: replaceable in tests. */
export interface CliIO {
  out: (text: string) => void;
  err: (text: string) => void;
}

const defaultIO: CliIO = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
};

function number(name: string) {
  return (v: string) => {
    const x = Number(v);
    if (!Number.isFinite(x)) throw new InvalidArgumentError(`${name} must be a number, got '${v}'`);
    return x;
  };
}

function integer(name: string) {
  return (v: string) => {
    const x = Number(v);
    if (!Number.isInteger(x))
      throw new InvalidArgumentError(`${name} must be an integer, got '${v}'`);
    return x;
  };
}

function integerList(name: string) {
  return (v: string) => {
    const xs = v.split(',').map((s) => Number(s.trim()));
    if (xs.length === 0 || xs.some((x) => !Number.isInteger(x) || x < 0)) {
      throw new InvalidArgumentError(`${name} must be comma-separated integers ≥ 0, got '${v}'`);
    }
    return xs;
  };
}

function numberList(name: string) {
  return (v: string) => {
    const xs = v.split(',').map((s) => Number(s.trim()));
    if (xs.length === 0 || xs.some((x) => !Number.isFinite(x))) {
      throw new InvalidArgumentError(`${name} must be comma-separated numbers, got '${v}'`);
    }
    return xs;
  };
}

interface Common {
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
  backend?: string;
}

function fmt(x: number, digits = 3): string {
  return Number.isFinite(x) ? x.toFixed(digits) : String(x);
}

function demoTable(cases: DemoCaseSummary[]): string {
  const lines = cases.map((c) =>
    [
      c.name.padEnd(13),
      c.shape.join('×').padEnd(12),
      c.similarity.padEnd(5),
      `${fmt(c.diceBefore)} → ${fmt(c.diceAfter)}`.padEnd(16),
      `${fmt(c.displacementErrorBefore, 2)} → ${fmt(c.displacementErrorAfter, 2)}`.padEnd(15),
      fmt(c.foldingPercent, 3).padEnd(9),
      `${fmt(c.seconds, 1)} s`,
    ].join('  '),
  );
  const head = [
    'case'.padEnd(13),
    'grid'.padEnd(12),
    'sim'.padEnd(5),
    'Dice'.padEnd(16),
    'error (vox)'.padEnd(15),
    'fold %'.padEnd(9),
    'time',
  ].join('  ');
  return [head, ...lines].join('\n');
}

/**
 * The instance-optimisation flags of `register`, shared by `batch` (which applies them to
 * every instance row): similarity, transform and affine stage, pyramid and optimiser.
 */
function instanceOptions(c: Command): Command {
  return c
    .addOption(
      new Option(
        '--similarity <name>',
        'lncc (same modality), mi, mind or dns (different modalities; dns: MASR-Net features, the bundled 2D network or --weights), mse',
      )
        .choices(['lncc', 'mi', 'mind', 'mse', 'dns'])
        .default('lncc'),
    )
    .addOption(
      new Option(
        '--transform <model>',
        'rigid or affine: that linear stage alone; velocity (diffeomorphic) or displacement: that deformable stage alone, unless --affine names a linear stage (default: affine then velocity)',
      ).choices(['rigid', 'affine', 'velocity', 'displacement']),
    )
    .addOption(
      new Option(
        '--affine <model>',
        'linear stage before the deformable one: affine (default without --transform), rigid, or none',
      ).choices(['affine', 'rigid', 'none']),
    )
    .option('--no-affine', 'skip the linear stage (= --affine none)')
    .option(
      '--affine-iterations <list>',
      'Adam iterations of the linear stage, one per level of its 3-level pyramid, coarsest first (default 150,100,50)',
      integerList('--affine-iterations'),
    )
    .option('--levels <n>', 'pyramid levels (default 3)', integer('--levels'))
    .option(
      '--iterations <list>',
      'Adam iterations per level of the deformable stage (of the linear one with --transform rigid|affine), coarsest first (default 150,100,60; 150,100,50 linear)',
      integerList('--iterations'),
    )
    .option('--learning-rate <x>', 'Adam learning rate (voxels)', number('--learning-rate'))
    .option(
      '--regularisation <x>',
      'weight of the diffusion regulariser',
      number('--regularisation'),
    )
    .option(
      '--skip-finest <n>',
      'stop this many levels before the full grid (faster, coarser)',
      integer('--skip-finest'),
    )
    .option(
      '--max-voxels <n>',
      'largest grid a level is optimised on, the field upsampled after (default 4194304; 0: the full grid, finer but ~2x the memory)',
      integer('--max-voxels'),
    )
    .option(
      '--samples <n>',
      'mi and mind: voxels sampled at random per iteration of the deformable stage, only those interpolated (default 32768; 0: every voxel)',
      integer('--samples'),
    )
    .option('--seed <n>', 'seed of the voxel samplers (mi, mind)', integer('--seed'));
}

/** Builds the `regkit` program (commander), writing through `io`. */
export function buildProgram(io: CliIO = defaultIO): Command {
  const program = new Command('regkit')
    .description(
      'Medical image registration on TensorFlow.js: register, apply, eval, info, deform, demo, batch.',
    )
    .version('0.1.0')
    .showSuggestionAfterError()
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .exitOverride();

  const common = (c: Command) =>
    c
      .option('--json', 'print a JSON summary on stdout (no progress bar)')
      .option('--quiet', 'no progress bar')
      .option('--verbose', 'print stack traces of errors')
      .addOption(
        new Option('--backend <name>', 'tfjs backend (default: tensorflow > wasm > cpu)').choices([
          'tensorflow',
          'wasm',
          'cpu',
        ]),
      )
      .exitOverride()
      .configureOutput({ writeOut: io.out, writeErr: io.err });

  common(
    instanceOptions(
      program
        .command('register')
        .description(
          'register --moving to --fixed in the fixed grid: multi-resolution instance optimisation (no trained model), or a trained network with --method and --weights',
        )
        .requiredOption(
          '--fixed <file>',
          'fixed image (NIfTI, MetaImage .mha/.mhd, NRRD or MGH .mgh/.mgz)',
        )
        .requiredOption(
          '--moving <file>',
          'moving image (any format of --fixed; mapped through both affines when the grids differ)',
        )
        .requiredOption('--out <file>', 'warped moving image')
        .option(
          '--field <file>',
          'write the total displacement field, affine included (ITK/ANTs: 5D NIfTI, or a .mha/.nrrd vector image; mm, LPS)',
        )
        .option(
          '--inverse-field [file]',
          'also write the inverse field (default: beside --field, _inverse)',
        )
        .option(
          '--affine-out <file>',
          'write the linear stage as an ITK/ANTs affine: .txt/.tfm (ITK text) or .mat (ANTs 0GenericAffine.mat)',
        )
        .option(
          '--deformable-field <file>',
          "write the deformable part alone (ANTs' 1Warp; --field is the total)",
        )
        .option(
          '--moving-labels <file>',
          'labels on the moving grid, warped with nearest neighbour',
        )
        .option('--out-labels <file>', 'where to write the warped labels')
        .option(
          '--png <file>',
          'figure PNG: axial/coronal/sagittal views (one in 2D) of fixed, moving, warped, |difference|, checkerboard and deformed grid, label outlines and a caption',
        )
        .option(
          '--method <name>',
          `register with a trained network of this method (${networkMethods().join(', ')}) instead of instance optimisation`,
        )
        .option(
          '--weights <dir>',
          'directory of the trained network (model.json + weights.bin); default: the bundled weights of the method (sitreg, fire); with --similarity dns, of the MASR-Net (default: the bundled one)',
        )
        .option('--force', 'replace existing outputs')
        .addHelpText(
          'after',
          `
Pipeline (as antsRegistrationSyN / elastix: linear first, then deformable):
  (no --transform)              affine, then velocity (stationary velocity field, diffeomorphic)
  --transform rigid | affine    only that linear stage; --field is its displacement
  --transform velocity | displacement
                                only that deformable stage (no linear stage), unless
                                --affine rigid|affine puts one first
  --affine rigid                rigid instead of affine before the deformable stage
  --affine none, --no-affine    no linear stage
The linear stage maps fixed voxel x to A x + t (3 pyramid levels, global NCC for lncc/mse,
MI for mi, MIND for mind; 4096 random voxels per iteration). Both stages
share one image pyramid when the linear stage's levels with iterations are levels of the
deformable one (e.g. --affine-iterations 60,30,0 --skip-finest 1). Similarities: lncc (local
NCC, window 9), mi (Parzen mutual information, 16 bins; 32 in the linear stage) and mind (MIND-SSC descriptors of
both images computed once per level, the moving ones warped, mean squared difference); mi
and mind compare --samples random voxels per iteration (default 32768, drawn from --seed;
only those points are interpolated), as elastix's random sampler does. --field is always the total displacement, affine included, so
'regkit apply --field' reproduces --out. --affine-out writes the affine in physical space as
ITK/ANTs do (LPS mm, fixed point to moving point): 'regkit apply --affine A.txt' or
'antsApplyTransforms -t A.txt' apply it; --deformable-field is the deformable part alone,
applied after it ('regkit apply --affine A.txt --field D.nii.gz', 'antsApplyTransforms -t
D.nii.gz -t A.txt').

Checked before registering (usage error, exit 2, nothing written): outputs (folder exists and
is writable, .nii/.nii.gz/.mha/.nrrd/.mgh/.mgz (fields: not MGH) or .png, not an input, not existing without --force), shapes and
channels, and the images: non-finite values, a constant or all-zero image, a moving image
outside the fixed grid (no overlap in space) or constant once resampled onto it, and a grid
one voxel thick on two axes are refused. A 3D image one voxel thick along one axis is
registered as 2D on the two others (zero displacement along that axis).
Warnings on stderr (the run goes on): the moving image covers under 25 % of the fixed grid,
or the foregrounds (above 1 % of each image's range) do not overlap.
Outputs are written together or not at all, once everything is computed; an output that
another run created meanwhile fails this run (exit 1) unless --force.`,
        ),
    ),
  ).action(async (o: Common & Parameters<typeof registerCommand>[0], command: Command) => {
    if (o.method) {
      const instanceOnly = {
        similarity: '--similarity',
        transform: '--transform',
        affine: '--affine',
        levels: '--levels',
        iterations: '--iterations',
        learningRate: '--learning-rate',
        regularisation: '--regularisation',
        skipFinest: '--skip-finest',
        maxVoxels: '--max-voxels',
        seed: '--seed',
        samples: '--samples',
      };
      for (const [key, flag] of Object.entries(instanceOnly)) {
        if (command.getOptionValueSource(key) === 'cli') {
          throw new UsageError(`${flag} applies to instance optimisation, not to --method`);
        }
      }
    }
    await setupBackend(o.backend);
    const summary = await registerCommand(o, createProgress(!!(o.json || o.quiet)), (w) =>
      io.err(`regkit: warning: ${w}\n`),
    );
    if (o.json) io.out(`${JSON.stringify(summary)}\n`);
    else {
      const last = summary.levels[summary.levels.length - 1];
      if (summary.method !== 'instance') {
        io.out(
          `registered ${o.moving} → ${o.fixed} (${summary.shape.join('×')}) with the ${summary.method} network ${summary.weights} in ${fmt(summary.seconds, 1)} s; folding ${fmt(summary.foldingPercent, 3)} %\n`,
        );
      } else
        io.out(
          `registered ${o.moving} → ${o.fixed} (${summary.shape.join('×')}, ${summary.pipeline.join(' + ')}, ${summary.similarity}${summary.resampled ? ', moving resampled through the affines' : ''}) in ${fmt(summary.seconds, 1)} s; final ${summary.similarity} ${fmt(last?.similarity ?? Number.NaN, 4)}, folding ${fmt(summary.foldingPercent, 3)} %\n`,
        );
      for (const [k, p] of Object.entries(summary.outputs)) io.out(`  ${k}: ${p}\n`);
    }
  });

  common(
    program
      .command('apply')
      .description(
        'warp an image or label map by an ITK/ANTs displacement field, affine transform, or both',
      )
      .requiredOption('--moving <file>', 'image to warp')
      .option('--field <file>', 'displacement field (ITK/ANTs: NIfTI, .mha or .nrrd)')
      .option(
        '--affine <file>',
        'affine transform (ITK .txt/.tfm or ANTs .mat, as register --affine-out writes); with --field, applied after it',
      )
      .requiredOption('--out <file>', 'output on the field grid')
      .option(
        '--reference <file>',
        'grid of the output (default: the field grid; required with --affine alone)',
      )
      .option(
        '--nearest',
        "nearest-neighbour interpolation (labels: values and, where it holds them, the input's datatype kept)",
      )
      .option('--force', 'replace an existing output')
      .addHelpText(
        'after',
        `
With --affine A and --field D, a fixed point x samples the moving image at A(x + D(x)): the
field first, then the affine, as 'antsApplyTransforms -t D -t A' and as 'regkit register'
composes its stages (--affine-out A --deformable-field D), with one interpolation. The
--field of 'regkit register' is already the total: apply it alone.`,
      ),
  ).action(async (o: Common & Parameters<typeof applyCommand>[0]) => {
    await setupBackend(o.backend);
    const r = await applyCommand(o);
    io.out(o.json ? `${JSON.stringify(r)}\n` : `wrote ${r.out}\n`);
  });

  common(
    program
      .command('eval')
      .description('Dice and HD95 per label; with --field, folding % and log-Jacobian std')
      .requiredOption('--fixed-labels <file>', 'reference labels')
      .requiredOption('--warped-labels <file>', 'labels to score, same grid')
      .option('--field <file>', 'displacement field on the fixed grid (ITK/ANTs)')
      .option(
        '--labels <list>',
        'labels to score, any numbers (default: all non-zero present)',
        numberList('--labels'),
      )
      .addHelpText(
        'after',
        `
Label maps: any finite values (1.5 and 2.7 are two labels, compared exactly). An image with
more distinct values than both 256 and half its voxels is refused as not a label map.`,
      ),
  ).action(async (o: Common & Parameters<typeof evalCommand>[0]) => {
    await setupBackend(o.backend);
    const s = await evalCommand(o);
    if (o.json) io.out(`${JSON.stringify(s)}\n`);
    else {
      io.out('label    Dice     HD95 (mm)\n');
      for (const [i, l] of s.labels.entries()) {
        io.out(`${String(l).padEnd(8)} ${fmt(s.dice[i]!).padEnd(8)} ${fmt(s.hd95[i]!, 2)}\n`);
      }
      io.out(`mean     ${fmt(s.meanDice).padEnd(8)} ${fmt(s.meanHd95, 2)}\n`);
      if (s.foldingPercent !== undefined) {
        io.out(
          `folding ${fmt(s.foldingPercent, 3)} %, log-Jacobian std ${fmt(s.logJacobianStd ?? Number.NaN, 4)}\n`,
        );
      }
    }
  });

  common(
    program
      .command('info')
      .description('header and value summary of an image (NIfTI, MetaImage, NRRD, MGH)')
      .argument('<file>', 'image file'),
  ).action(async (file: string, o: Common) => {
    await setupBackend(o.backend);
    const s = await infoCommand(file);
    if (o.json) io.out(`${JSON.stringify(s)}\n`);
    else {
      io.out(
        `${s.file}\n  ${s.format} ${s.datatype}, ${s.shape.join('×')}${s.channels > 1 ? ` × ${s.channels} channels` : ''}, spacing ${s.spacing.join('×')} mm, ${s.orientation} (${s.affineSource})\n  values [${fmt(s.min, 4)}, ${fmt(s.max, 4)}], mean ${fmt(s.mean, 4)}${s.intentCode ? `, intent ${s.intentCode}` : ''}${s.description ? `\n  "${s.description}"` : ''}\n  affine\n${s.affine.map((r) => `    ${r.map((x) => fmt(x, 4).padStart(10)).join(' ')}`).join('\n')}\n`,
      );
    }
  });

  common(
    program
      .command('deform')
      .description(
        'make a problem with a known answer: warp an image (and labels) by a seeded random smooth field',
      )
      .requiredOption('--image <file>', 'image to deform')
      .requiredOption(
        '--out <file>',
        'deformed image: out(x) = image(x + v(x)), or image(A(x + v(x))) with a linear misalignment A',
      )
      .requiredOption('--true-field <file>', 'the total displacement as an ITK/ANTs field')
      .option('--labels <file>', 'labels on the image grid')
      .option('--out-labels <file>', 'deformed labels')
      .option(
        '--max-displacement <voxels>',
        'bound on each component (default 4)',
        number('--max-displacement'),
      )
      .option(
        '--control-spacing <voxels>',
        'B-spline control spacing (default 16)',
        number('--control-spacing'),
      )
      .option('--seed <n>', 'seed (default 1)', integer('--seed'))
      .option(
        '--rotate <degrees>',
        'linear misalignment after the field: rotation in degrees (3D: a,b,c about axes 0, 1, 2; 2D: one angle), about the grid centre',
        numberList('--rotate'),
      )
      .option(
        '--scale <factors>',
        'linear misalignment: scale factor, one or one per axis (default 1)',
        numberList('--scale'),
      )
      .option(
        '--translate <voxels>',
        'linear misalignment: translation in voxels, one per axis (default 0)',
        numberList('--translate'),
      )
      .option('--force', 'replace existing outputs'),
  ).action(async (o: Common & Parameters<typeof deformCommand>[0]) => {
    await setupBackend(o.backend);
    const r = await deformCommand(o);
    io.out(
      o.json
        ? `${JSON.stringify({ ...r, out: o.out, trueField: o.trueField })}\n`
        : `wrote ${o.out} and ${o.trueField}\n`,
    );
  });

  common(
    program
      .command('demo')
      .description(
        'register the bundled 2D T1/PD pair and 3D Colin27 T1 (AAL labels) after known random deformations',
      )
      .option('--out-dir <dir>', 'output folder', 'regkit-demo')
      .addOption(new Option('--case <name>', 'run one case only').choices(['2d', '3d']))
      .option(
        '--resolution-3d <mm>',
        'voxel size of the 3D case (default 2)',
        number('--resolution-3d'),
      )
      .option('--seed <n>', 'seed of the deformations (default 7)', integer('--seed'))
      .option('--force', 'replace an existing output folder'),
  ).action(
    async (
      o: Common & {
        outDir: string;
        case?: '2d' | '3d';
        resolution3d?: number;
        seed?: number;
        force?: boolean;
      },
    ) => {
      const t0 = performance.now();
      const backend = await setupBackend(o.backend);
      const opts: Parameters<typeof demoCommand>[0] = { outDir: o.outDir, force: !!o.force };
      if (o.case) opts.cases = [o.case];
      if (o.resolution3d !== undefined) opts.resolution3d = o.resolution3d;
      if (o.seed !== undefined) opts.seed = o.seed;
      if (!o.json) io.out(`regkit demo on the ${backend} backend; outputs in ${o.outDir}/\n`);
      const cases = await demoCommand(opts, createProgress(!!(o.json || o.quiet)));
      const total = (performance.now() - t0) / 1000;
      if (o.json) io.out(`${JSON.stringify({ backend, seconds: total, cases })}\n`);
      else {
        io.out(`${demoTable(cases)}\n`);
        io.out(
          'Dice: mean over labels, fixed labels against moving labels before and warped labels after.\nerror: mean |u − u_true| in voxels inside the labels (before: mean |u_true|).\n',
        );
        io.out(`total ${fmt(total, 1)} s\n`);
      }
    },
  );
  const batch = common(
    instanceOptions(
      program
        .command('batch')
        .description(
          'register every pair of a manifest (CSV) into DIR/<id>/, resumable and sharded across jobs (Slurm, Kubernetes, AWS Batch arrays); `batch merge DIR` gathers results.csv',
        )
        .option('--manifest <csv>', `pairs to register: columns ${MANIFEST_COLUMNS.join(',')}`)
        .option('--out-dir <dir>', 'one folder per row: <dir>/<id>/')
        .option(
          '--shard <I/N>',
          'run rows r with r mod N = I (default: I from REGKIT_SHARD_INDEX, SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX or AWS_BATCH_JOB_ARRAY_INDEX, N from --shards or SLURM_ARRAY_TASK_COUNT; else every row)',
        )
        .option(
          '--shards <n>',
          'the number of shards N, the index from the environment',
          integer('--shards'),
        )
        .addHelpText(
          'after',
          `
Manifest: a CSV with a header; columns id, fixed, moving, and optionally fixed_labels,
moving_labels, method (instance, or a network: ${networkMethods().join(', ')}), weights (the
network's folder; default: its bundled weights) and similarity (lncc, mi, mind, mse; default
--similarity). Relative paths are relative to the manifest's folder. ids name folders
(letters, digits, _ - .).
Per row: <dir>/<id>/warped.nii.gz, field.nii.gz (ITK/ANTs, total), labels.nii.gz (with
moving_labels), then result.json (Dice before/after with fixed_labels, folding %, seconds,
options, SHA-256 of the inputs), each written to a temporary and renamed: the same outputs
as 'regkit register' with the same options. The instance flags (--similarity, --levels, ...)
apply to every instance row.
Rerunning the same command skips rows whose result.json matches their inputs and options,
so a killed job resumes. A failing row is recorded (its result.json, status failed, and
<dir>/failures-I-of-N.jsonl) and the others run; the exit code is 1 when a row failed.
Networks are loaded once per shard. Parallel runs on one machine: one process per shard.`,
        ),
    ),
  ).action(async (o: Common & BatchOptions & { outDir?: string; manifest?: string }) => {
    if (!o.manifest) throw new UsageError("required option '--manifest <csv>' not specified");
    if (!o.outDir) throw new UsageError("required option '--out-dir <dir>' not specified");
    const lines = !o.quiet;
    await setupBackend(o.backend);
    const options: BatchOptions = { ...o, manifest: o.manifest, outDir: o.outDir };
    if (lines) options.progress = createLineProgress(io.err);
    const s = await runBatch(options);
    if (o.json) io.out(`${JSON.stringify(s)}\n`);
    else {
      io.out(
        `shard ${s.shard.index}/${s.shard.count}: ${s.rows} of ${s.manifestRows} rows, ${s.done} done, ${s.skipped} skipped (up to date), ${s.failed} failed in ${fmt(s.seconds, 1)} s; outputs in ${s.outDir}\n`,
      );
    }
    if (s.failed > 0) {
      throw new RegkitError(
        `${s.failed} of ${s.rows} rows failed (listed in ${s.failuresFile}; the others are done)`,
      );
    }
  });

  batch
    .command('merge')
    .description('write DIR/results.csv: one line per row of DIR/<id>/result.json')
    .argument('<dir>', 'the --out-dir of the batch')
    .option(
      '--manifest <csv>',
      'also list rows of the manifest that have no result (status missing)',
    )
    .option('--json', 'print a JSON summary on stdout')
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .action(async (dir: string, _o: unknown, command: Command) => {
      // --json and --manifest after `merge` may be parsed by `batch`, which has them too
      const o = command.optsWithGlobals() as { manifest?: string; json?: boolean };
      const s = await mergeBatch(dir, o.manifest);
      if (o.json) io.out(`${JSON.stringify(s)}\n`);
      else
        io.out(
          `wrote ${s.file}: ${s.rows} rows, ${s.done} done, ${s.failed} failed${o.manifest ? `, ${s.missing} missing` : ''}\n`,
        );
      if (s.failed > 0 || s.missing > 0) {
        throw new RegkitError(
          `${s.failed} rows failed and ${s.missing} have no result (see ${s.file})`,
        );
      }
    });
  return program;
}

/**
 * Runs the `regkit` command line (`argv` as `process.argv`) and returns the exit code: 0 on
 * success, 1 on failure, 2 on a usage error. Errors are one line on stderr (the stack too
 * with `--verbose`).
 */
export async function runCli(argv: string[], io: CliIO = defaultIO): Promise<number> {
  const verbose = argv.includes('--verbose');
  const program = buildProgram(io);
  try {
    if (argv.length <= 2) {
      program.outputHelp();
      return EXIT.usage;
    }
    await program.parseAsync(argv);
    return EXIT.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (
        e.code === 'commander.helpDisplayed' ||
        e.code === 'commander.version' ||
        e.code === 'commander.help'
      )
        return EXIT.ok;
      return e.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    const err = e as Error;
    const usage = err instanceof UsageError;
    const known = err instanceof RegkitError || err instanceof RegkitIOError;
    io.err(
      `regkit: ${usage ? '' : known ? '' : `${err.name ?? 'Error'}: `}${err.message ?? String(e)}\n`,
    );
    if (verbose && err.stack) io.err(`${err.stack}\n`);
    return usage ? EXIT.usage : EXIT.failure;
  }
}
