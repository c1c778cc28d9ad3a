import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tf } from '@regkit/core';
import { directoryHandler, encodeNamedWeights, readWeights } from '@regkit/networks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, useBackend } from './helpers.js';
import { EPOCHS, STEPS, TRAINER_NAMES, train } from './resume_trainers.mjs';

// A resumed run must be the run it resumes: every weight bit-identical to an uninterrupted
// run, for every trainer (trainRegistration with a function similarity, with parameter groups
// and with MINE, built in the constructor or lazily, trainSitreg, trainFire with its three
// Adams, trainInnreg). STEPS = 5 puts the first
// checkpoint at t = 5 Adam steps, where tfjs's Adam.setWeights() recomputes β₂^(t+1) = 0.999⁶
// differently from its running float32 products.

const tmp = mkdtempSync(join(tmpdir(), 'regkit-resume-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** The paths whose bytes differ (or that only one side has). */
function differing(a: Record<string, Uint8Array>, b: Record<string, Uint8Array>): string[] {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].filter((k) => !a[k] || !b[k] || Buffer.compare(a[k], b[k]) !== 0);
}

describe.each(BACKENDS)('resumed training on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });

  for (const name of TRAINER_NAMES) {
    it(`${name}: stopped after epoch k and resumed with new objects, it ends bit-identical`, async () => {
      const before = tf.memory().numTensors;
      const straight = await train(name, {
        epochs: EPOCHS,
        checkpointDir: join(tmp, `${backend}-${name}`),
      });
      expect(straight.result.history).toHaveLength(EPOCHS);
      // stopped after epoch 1 (t = STEPS Adam steps), resumed to epoch 2, resumed to the end
      const dir = join(tmp, `${backend}-${name}-resumed`);
      const runs = [];
      for (const epochs of [1, 2, EPOCHS])
        runs.push(await train(name, { epochs, checkpointDir: dir }));
      expect(runs.map((r) => r.result.resumedFromEpoch)).toEqual([0, 1, 2]);
      expect(
        differing(straight.weights, runs[2]!.weights),
        `resumed after epochs 1 and 2 (${STEPS} steps each)`,
      ).toEqual([]);
      expect(runs[2]!.result.history).toEqual(straight.result.history);
      // checkpoints every epoch, and the tensor count stays the same epoch after epoch
      for (const r of [straight, ...runs]) expect(new Set(r.counts).size, `${r.counts}`).toBe(1);
      expect(tf.memory().numTensors).toBe(before);
    });
  }
});

describe("a checkpoint written before Adam's powers were saved", () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('resumes bit-identically too (the powers are replayed from the iteration count)', async () => {
    const straight = await train('voxelmorph', { epochs: EPOCHS });
    const dir = join(tmp, 'old-format');
    await train('voxelmorph', { epochs: 1, checkpointDir: dir });
    const { weightsDir } = JSON.parse(readFileSync(join(dir, 'checkpoint.json'), 'utf8'));
    const { weights } = await readWeights(join(dir, weightsDir));
    expect(Object.keys(weights)).toContain('optimizer/accBeta2');
    const old = Object.fromEntries(
      Object.entries(weights).filter(([k]) => !k.startsWith('optimizer/accBeta')),
    );
    rmSync(join(dir, weightsDir), { recursive: true });
    await directoryHandler(join(dir, weightsDir)).save!(await encodeNamedWeights(old));
    tf.dispose(Object.values(weights));
    const resumed = await train('voxelmorph', { epochs: EPOCHS, checkpointDir: dir });
    expect(resumed.result.resumedFromEpoch).toBe(1);
    expect(differing(straight.weights, resumed.weights)).toEqual([]);
  });
});

/** Runs the child; resolves with its exit code and signal. */
function child(args: string[], onSpawn?: (c: ChildProcess) => void) {
  const script = fileURLToPath(new URL('./resume_child.mjs', import.meta.url));
  return new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>(
    (resolve) => {
      const c = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      c.stderr!.on('data', (d) => {
        stderr += d;
      });
      c.on('exit', (code, signal) => resolve({ code, signal, stderr }));
      onSpawn?.(c);
    },
  );
}

describe('a training process killed with SIGKILL', () => {
  for (const name of TRAINER_NAMES) {
    it(`${name}: resumed by a new process, it ends bit-identical to an uninterrupted process`, async () => {
      const outFull = join(tmp, `kill-${name}-full.json`);
      const full = await child([name, join(tmp, `kill-${name}-ck-full`), outFull]);
      expect(full.code, full.stderr).toBe(0);

      const dir = join(tmp, `kill-${name}-ck`);
      const out = join(tmp, `kill-${name}.json`);
      const killed = await child([name, dir, out, '500'], (c) => {
        // poll checkpoint.json and kill once the checkpoint of epoch 1 is complete
        const timer = setInterval(() => {
          try {
            const json = JSON.parse(readFileSync(join(dir, 'checkpoint.json'), 'utf8'));
            if (json.epoch >= 1) {
              clearInterval(timer);
              c.kill('SIGKILL');
            }
          } catch {
            // not written yet
          }
        }, 10);
        c.on('exit', () => clearInterval(timer));
      });
      expect(killed.signal, killed.stderr).toBe('SIGKILL');
      expect(existsSync(out)).toBe(false);

      const resumed = await child([name, dir, out]);
      expect(resumed.code, resumed.stderr).toBe(0);
      const a = JSON.parse(readFileSync(outFull, 'utf8'));
      const b = JSON.parse(readFileSync(out, 'utf8'));
      expect(b.result.resumedFromEpoch).toBeGreaterThanOrEqual(1);
      expect(b.result.resumedFromEpoch).toBeLessThan(EPOCHS);
      expect(b.result.history).toEqual(a.result.history);
      expect(Object.keys(b.weights).sort()).toEqual(Object.keys(a.weights).sort());
      const changed = Object.keys(a.weights).filter((k) => a.weights[k] !== b.weights[k]);
      expect(changed, `resumed from epoch ${b.result.resumedFromEpoch}`).toEqual([]);
      expect(new Set(b.counts).size).toBe(1);
    });
  }
});
