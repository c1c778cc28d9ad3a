/**
 * The parts fit together: a strictly typed user file (test/user/mixing.ts) trains SITReg
 * with a MineEstimator, VoxelMorph with mindLoss, and calls registerImages with a
 * FeatureExtractor through the shared contracts, with no casts. It must pass `tsc --strict`
 * against the built packages' declarations, and running it must change both SITReg's and
 * MINE's weights, VoxelMorph's, and lower the MIND difference.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { initBackend, tf } from '@regkit/core';
import * as kernels from '@regkit/kernels';
import { beforeAll, describe, expect, it } from 'vitest';
import { mixParts } from './user/mixing.js';

const userDir = fileURLToPath(new URL('./user/', import.meta.url));

describe('mixing parts of different papers', () => {
  beforeAll(async () => {
    await initBackend('wasm', { kernels });
  });

  it('the user file type-checks with tsc --strict and no casts', () => {
    const source = readFileSync(`${userDir}mixing.ts`, 'utf8');
    expect(source).not.toMatch(/\bas\s+(unknown|never|any)\b|<any>|@ts-/);
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
    let messages = '';
    try {
      execFileSync(process.execPath, [tsc, '-p', `${userDir}tsconfig.json`], {
        encoding: 'utf8',
        stdio: 'pipe',
      });
    } catch (e) {
      messages = String((e as { stdout?: string }).stdout ?? e);
    }
    expect(messages).toBe('');
  });

  it('SITReg trains with MINE (both weight sets change), VoxelMorph with MIND, registerImages with MIND features', async () => {
    const n0 = tf.memory().numTensors;
    const r = await mixParts();
    expect(r.sitregChange).toBeGreaterThan(1e-5);
    expect(r.mineChange).toBeGreaterThan(1e-5);
    expect(r.voxelMorphChange).toBeGreaterThan(1e-6);
    expect(r.mindAfter).toBeLessThan(0.8 * r.mindBefore);
    expect(tf.memory().numTensors).toBe(n0);
  });
});
