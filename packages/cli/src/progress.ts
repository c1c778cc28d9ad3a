import cliProgress from 'cli-progress';

/** Where progress goes: a bar with ETA on a terminal, nothing otherwise. */
export interface Progress {
  /** Starts (or restarts) a bar for a step of `total` units. */
  start(label: string, total: number): void;
  /** Sets the done units of the current step. */
  update(done: number, info?: string): void;
  /** Ends the current step. */
  stop(): void;
}

/**
 * A progress reporter: a `cli-progress` bar with ETA on stderr when it is a terminal and
 * `quiet` is false; silent otherwise (pipes, `--json`, `--quiet`).
 */
export function createProgress(quiet: boolean): Progress {
  const stream = process.stderr;
  if (quiet || !stream.isTTY) {
    return { start() {}, update() {}, stop() {} };
  }
  let bar: cliProgress.SingleBar | null = null;
  return {
    start(label, total) {
      bar?.stop();
      bar = new cliProgress.SingleBar(
        {
          stream,
          format: `${label.padEnd(24)} {bar} {percentage}% | ETA {eta_formatted} | {info}`,
          hideCursor: true,
          clearOnComplete: false,
          etaBuffer: 20,
        },
        cliProgress.Presets.shades_classic,
      );
      bar.start(total, 0, { info: '' });
    },
    update(done, info = '') {
      bar?.update(done, { info });
    },
    stop() {
      bar?.stop();
      bar = null;
    },
  };
}

/**
 * A progress reporter for logs (batch jobs, pipes): one line per {@link Progress.update},
 * `label done/total info`, through `write`. `start` sets the label and total and writes
 * nothing; `stop` writes nothing.
 */
export function createLineProgress(write: (line: string) => void): Progress {
  let label = '';
  let total = 0;
  return {
    start(l, t) {
      label = l;
      total = t;
    },
    update(done, info = '') {
      const width = String(total).length;
      write(`${label} ${String(done).padStart(width)}/${total}${info ? ` ${info}` : ''}\n`);
    },
    stop() {},
  };
}
