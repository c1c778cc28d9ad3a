// examples/: `--steps` trains exactly that many steps, or is refused (60 used to train 50).
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const examples = resolve(
  fileURLToPath(new URL('.', import.meta.url)),
  '..',
  '..',
  '..',
  'examples',
);

describe('examples: --steps', () => {
  it('is exact or refused with a clear message, in every app', async () => {
    const { epochsForSteps } = (await import(resolve(examples, 'common/src/steps.mjs'))) as {
      epochsForSteps: (steps: string | number, perEpoch: number) => number;
    };
    expect(epochsForSteps('100', 50)).toBe(2);
    expect(epochsForSteps(75, 25)).toBe(3);
    expect(() => epochsForSteps('60', 50)).toThrow(
      '--steps 60 is not a multiple of the 50 steps per epoch: use 50 or 100',
    );
    expect(() => epochsForSteps('20', 50)).toThrow('use 50');
    expect(() => epochsForSteps('0', 50)).toThrow('positive integer');
    expect(() => epochsForSteps('1e', 50)).toThrow('positive integer');
    for (const app of ['innreg', 'mine', 'sitreg', 'fire']) {
      const run = readFileSync(resolve(examples, app, 'src/run.mjs'), 'utf8');
      // `--steps` as typed (or the example's default when it is absent) goes through the check
      expect(run, app).toMatch(/epochsForStepsOrExit\((args\.steps|stepsArg), STEPS_PER_EPOCH\)/);
      if (!run.includes('epochsForStepsOrExit(args.steps,')) {
        expect(run, app).toMatch(/const stepsArg = args\.steps \?\? /);
      }
      expect(run, app).not.toMatch(/Math\.round\(steps \/ STEPS_PER_EPOCH\)/);
    }
  });
});
