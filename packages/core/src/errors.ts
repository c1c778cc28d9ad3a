/** Base class of every error regkit throws on purpose (bad shapes, bad options, missing backends). */
export class RegkitError extends Error {
  override name = 'RegkitError';
}

/** Thrown when a requested backend cannot be initialised. */
export class RegkitBackendError extends RegkitError {
  override name = 'RegkitBackendError';
}
