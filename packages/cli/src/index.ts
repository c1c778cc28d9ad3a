/**
 * @regkit/cli: the `regkit` command and its programmatic parts (the commands as functions,
 * synthetic deformations for demos and tests). The registration itself lives in
 * `@regkit/register` (instance optimisation) and `@regkit/networks` (trained networks).
 */

export { type ApplyCommandOptions, applyCommand } from './apply.js';
export {
  type BatchInstanceOptions,
  type BatchOptions,
  type BatchRowReport,
  type BatchRowResult,
  type BatchSummary,
  failuresFile,
  type HashedInput,
  type MergeSummary,
  mergeBatch,
  RESULTS_COLUMNS,
  ROW_FILES,
  type RowOverlap,
  runBatch,
  sha256File,
} from './batch.js';
export { buildProgram, type CliIO, runCli } from './cli.js';
export { type DeformCommandOptions, deformCommand } from './deform.js';
export {
  type DemoCaseSummary,
  type DemoOptions,
  demoCommand,
  demoDataDir,
  intensityClasses,
} from './demo.js';
export { EXIT, UsageError } from './errors.js';
export {
  assertLabelMap,
  type EvalCommandOptions,
  type EvalSummary,
  evalCommand,
  labelOverlap,
} from './evaluate.js';
export {
  OutputClaimedError,
  OutputTransaction,
  processAlive,
  removeStaleTemporaries,
  TEMPORARY_NAME,
} from './files.js';
export { sameGrid, warpThroughAffines } from './geometry.js';
export { type InfoSummary, infoCommand } from './info.js';
export {
  MANIFEST_COLUMNS,
  type ManifestRow,
  parseManifest,
  readManifest,
  resolveShard,
  SHARD_INDEX_VARIABLES,
  type Shard,
} from './manifest.js';
export { createLineProgress, createProgress, type Progress } from './progress.js';
export {
  encodeLabels,
  inverseFieldPath,
  labelDatatype,
  labelDatatypeOf,
  type RegisterCommandOptions,
  type RegisterContext,
  type RegisterSummary,
  registerCommand,
} from './register.js';
export { setupBackend } from './runtime.js';
