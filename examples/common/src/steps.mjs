/**
 * Training budgets of the example apps: `--steps` is a number of optimisation steps, trained
 * as whole epochs of a fixed number of steps each.
 */

/**
 * The epochs that train exactly `steps` steps of `stepsPerEpoch` each. Refuses (throws an
 * Error naming the flag and the nearest budgets) a budget that is not a positive multiple of
 * `stepsPerEpoch`, instead of rounding it silently (60 steps used to train 50).
 *
 * @param {string | number} steps the `--steps` value.
 * @param {number} stepsPerEpoch steps per epoch of the app.
 * @returns {number} epochs, so that epochs × stepsPerEpoch = steps.
 */
export function epochsForSteps(steps, stepsPerEpoch) {
  const n = Number(steps);
  if (!Number.isInteger(n) || n <= 0) {
    throw new Error(`--steps must be a positive integer, got '${steps}'`);
  }
  if (n % stepsPerEpoch !== 0) {
    const lower = Math.floor(n / stepsPerEpoch) * stepsPerEpoch;
    const upper = lower + stepsPerEpoch;
    throw new Error(
      `--steps ${n} is not a multiple of the ${stepsPerEpoch} steps per epoch: use ${lower > 0 ? `${lower} or ` : ''}${upper}`,
    );
  }
  return n / stepsPerEpoch;
}

/**
 * {@link epochsForSteps} for a command line: prints the error on stderr and exits with code 2
 * (usage error) instead of throwing.
 *
 * @param {string | number} steps the `--steps` value.
 * @param {number} stepsPerEpoch steps per epoch of the app.
 * @returns {number} epochs.
 */
export function epochsForStepsOrExit(steps, stepsPerEpoch) {
  try {
    return epochsForSteps(steps, stepsPerEpoch);
  } catch (e) {
    process.stderr.write(`${e.message}\n`);
    process.exit(2);
  }
}
