export const EPOCHS: number;
export const STEPS: number;
export const TRAINER_NAMES: string[];
export function train(
  name: string,
  options: { epochs: number; checkpointDir?: string; onEpoch?: (epoch: number) => void },
): Promise<{
  /** Every weight's bytes by `model/…` or `similarity/…` path. */
  weights: Record<string, Uint8Array>;
  result: { epochs: number; resumedFromEpoch: number; history: number[]; elapsedMs: number };
  /** `tf.memory().numTensors` after each epoch of this run. */
  counts: number[];
}>;
