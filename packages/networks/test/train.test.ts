import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tf } from '@regkit/core';
import { localNccLoss, MineEstimator, mseLoss } from '@regkit/losses';
import {
  createVoxelMorph,
  loadWeights,
  readWeights,
  saveWeights,
  TrainingDivergedError,
  trainRegistration,
} from '@regkit/networks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useBackend } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'regkit-networks-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const small = { ndim: 2 as const, encoder: [4, 8], decoder: [8, 8, 4] };

/** A bright square and the same square shifted by 2 voxels: a pair VoxelMorph can solve. */
function squarePair(shift = 2): { moving: tf.Tensor; fixed: tf.Tensor } {
  const img = (dx: number) =>
    tf.tidy(() => {
      const v = new Float32Array(32 * 32);
      for (let i = 10; i < 22; i++) for (let j = 10 + dx; j < 22 + dx; j++) v[i * 32 + j] = 1;
      return tf.tensor(v, [1, 32, 32, 1]);
    });
  return { moving: img(shift), fixed: img(0) };
}

describe('trainRegistration', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });

  it('learns to register a shifted square and keeps tf.memory flat across epochs', async () => {
    const model = createVoxelMorph({ ...small, seed: 1 });
    const counts: number[] = [];
    const before = squarePair();
    const mseBefore = mseLoss(before.moving, before.fixed).dataSync()[0]!;
    const result = await trainRegistration({
      model,
      similarity: (f, w) => mseLoss(w, f),
      similarityWeight: 10,
      regularisationWeight: 0.1,
      learningRate: 3e-3,
      epochs: 12,
      stepsPerEpoch: 10,
      data: () => squarePair(),
      onProgress: (p) => {
        if (p.step === p.stepsPerEpoch - 1) counts.push(tf.memory().numTensors);
      },
    });
    expect(result.history.length).toBe(12);
    // after the first epoch (Adam's moments are created there) the count never changes
    expect(new Set(counts.slice(1)).size).toBe(1);
    const out = model.apply(before.moving, before.fixed);
    const mseAfter = mseLoss(out.warped, before.fixed).dataSync()[0]!;
    expect(mseAfter).toBeLessThan(0.5 * mseBefore);
    tf.dispose([
      ...Object.values(before),
      ...Object.values(out).filter((t): t is tf.Tensor => t !== null),
    ]);
    model.dispose();
  });

  it('trains a MINE estimator with the model and checkpoints both', async () => {
    const model = createVoxelMorph({ ...small, probabilistic: true, seed: 2 });
    const mine = new MineEstimator({ shuffle: 'local', neighbourhood: 4, seed: 3 });
    const dir = join(tmp, 'mine');
    const w0 = mine.namedVariables().length;
    await trainRegistration({
      model,
      similarity: mine,
      epochs: 2,
      stepsPerEpoch: 2,
      learningRate: 1e-3,
      data: () => squarePair(),
      checkpointDir: dir,
    });
    expect(w0).toBe(0); // built lazily by the trainer
    const { weights } = await readWeights(join(dir, 'epoch-000002'));
    const names = Object.keys(weights);
    expect(names).toContain('similarity/w1');
    expect(names).toContain('model/flow/kernel');
    expect(names).toContain('optimizer/m/similarity/w1');
    expect(names).toContain('optimizer/iterations');
    expect(weights['optimizer/iterations']!.dataSync()[0]).toBe(4);
    tf.dispose(Object.values(weights));
    model.dispose();
    mine.dispose();
  });

  it('stops on a NaN loss with a clear error and keeps the weights finite', async () => {
    const model = createVoxelMorph({ ...small, seed: 1 });
    const before = model.flow.kernel.arraySync();
    const bad = () => ({
      moving: tf.fill([1, 32, 32, 1], Number.NaN),
      fixed: tf.zeros([1, 32, 32, 1]),
    });
    const err = await trainRegistration({
      model,
      similarity: (f, w) => localNccLoss(w, f),
      epochs: 3,
      data: bad,
    }).catch((e) => e);
    expect(err).toBeInstanceOf(TrainingDivergedError);
    expect(String(err.message)).toMatch(
      /the loss became NaN at epoch 0, step 0 \(similarity term NaN, regulariser (NaN|[0-9.e-]+)\); the weights keep their last finite values/,
    );
    expect(model.flow.kernel.arraySync()).toEqual(before);
    model.dispose();
  });

  it('resumes after a SIGKILL mid-epoch and ends with the weights of an uninterrupted run', () => {
    const script = fileURLToPath(new URL('./train_script.mjs', import.meta.url));
    const run = (args: string[]) =>
      spawnSync(process.execPath, [script, ...args], { encoding: 'utf8', timeout: 240_000 });
    const full = run([join(tmp, 'ck-full'), join(tmp, 'w-full')]);
    expect(full.status, full.stderr).toBe(0);
    const killed = run([join(tmp, 'ck-kill'), join(tmp, 'w-kill'), '3']);
    expect(killed.signal).toBe('SIGKILL');
    // a checkpoint after epoch 3 (epochs 0–2 done) and no complete weights yet
    expect(readdirSync(join(tmp, 'ck-kill'))).toContain('epoch-000003');
    expect(existsSync(join(tmp, 'w-kill'))).toBe(false);
    // a torn write from another kill: must be ignored
    writeFileSync(join(tmp, 'ck-kill', '.checkpoint.json.123.abc.tmp'), '{"format": "regkit-chec');
    const resumed = run([join(tmp, 'ck-kill'), join(tmp, 'w-kill')]);
    expect(resumed.status, resumed.stderr).toBe(0);
    expect(JSON.parse(resumed.stdout.trim().split('\n').pop()!).resumedFromEpoch).toBe(3);
    return (async () => {
      const a = await readWeights(join(tmp, 'w-full'));
      const b = await readWeights(join(tmp, 'w-kill'));
      expect(Object.keys(b.weights)).toEqual(Object.keys(a.weights));
      for (const k of Object.keys(a.weights)) {
        expect(Array.from(b.weights[k]!.dataSync()), k).toEqual(
          Array.from(a.weights[k]!.dataSync()),
        );
      }
      tf.dispose([...Object.values(a.weights), ...Object.values(b.weights)]);
    })();
  });

  it("scales every step by learningRateFactor (a schedule), which really sets Adam's rate", async () => {
    const weights = (m: ReturnType<typeof createVoxelMorph>) =>
      m.namedVariables().map(([, v]) => Array.from(v.dataSync()));
    const train = async (learningRateFactor?: (step: number) => number, epochs = 2) => {
      const model = createVoxelMorph({ ...small, seed: 3 });
      const initial = weights(model);
      await trainRegistration({
        model,
        similarity: (f, w) => mseLoss(w, f),
        learningRate: 3e-3,
        epochs,
        stepsPerEpoch: 2,
        data: () => squarePair(),
        learningRateFactor,
      });
      const out = { initial, final: weights(model) };
      model.dispose();
      return out;
    };
    const plain = await train();
    // a factor of 1 is the constant rate, bit for bit
    expect((await train(() => 1)).final).toEqual(plain.final);
    // a factor of 0 at every step leaves the weights where they started
    const frozen = await train(() => 0);
    expect(frozen.final).toEqual(frozen.initial);
    expect(plain.final).not.toEqual(plain.initial);
    // 1 for the first epoch, then 0 (steps 2 and 3 of 0–3): the weights of a one-epoch run
    const oneEpoch = await train(undefined, 1);
    expect((await train((k) => (k < 2 ? 1 : 0))).final).toEqual(oneEpoch.final);
    // a halved rate is neither the full one nor no step
    const half = await train(() => 0.5);
    expect(half.final).not.toEqual(plain.final);
    expect(half.final).not.toEqual(half.initial);
    const model = createVoxelMorph({ ...small });
    const sim = (f: tf.Tensor, w: tf.Tensor) => mseLoss(w, f);
    const data = () => squarePair();
    await expect(
      trainRegistration({ model, similarity: sim, data, epochs: 1, learningRateFactor: () => -1 }),
    ).rejects.toThrow(/'learningRateFactor\(0\)' must be a finite number ≥ 0, got -1/);
    await expect(
      trainRegistration({
        model,
        similarity: sim,
        data,
        epochs: 1,
        learningRateFactor: 2 as never,
      }),
    ).rejects.toThrow(/'learningRateFactor' must be a function/);
    model.dispose();
  });

  it('explains bad options', async () => {
    const model = createVoxelMorph({ ...small });
    const data = () => squarePair();
    const sim = (f: tf.Tensor, w: tf.Tensor) => mseLoss(w, f);
    await expect(trainRegistration({ model, similarity: sim, data, epochs: 0 })).rejects.toThrow(
      /'epochs' must be a positive integer, got 0/,
    );
    await expect(
      trainRegistration({ model, similarity: sim, data, epochs: 1, regulariser: 'kl' as never }),
    ).rejects.toThrow(/'regulariser' must be a function \(output\) => scalar, got "kl"/);
    await expect(trainRegistration({ model, data, epochs: 1 })).rejects.toThrow(
      /VoxelMorph has no similarity of its own/,
    );
    await expect(
      trainRegistration({ model, similarity: sim, data: () => ({}) as never, epochs: 1 }),
    ).rejects.toThrow(/'data\(0, 0\)' must return \{ moving, fixed \} tensors/);
    model.dispose();
  });
});

describe('weight directories', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('round-trip every weight and refuse another architecture', async () => {
    const a = createVoxelMorph({ ...small, seed: 1 });
    const b = createVoxelMorph({ ...small, seed: 2 });
    const dir = join(tmp, 'weights');
    await saveWeights(a, dir, { options: small });
    expect(readdirSync(dir).sort()).toEqual(['model.json', 'weights.bin']);
    const meta = await loadWeights(b, dir);
    expect(meta).toEqual({ options: small });
    for (const [[p, va], [, vb]] of a
      .namedVariables()
      .map((e, i) => [e, b.namedVariables()[i]!] as const)) {
      expect(Array.from(vb.dataSync()), p).toEqual(Array.from(va.dataSync()));
    }
    const other = createVoxelMorph({ ndim: 2, encoder: [4, 8], decoder: [8, 8, 6] });
    await expect(loadWeights(other, dir)).rejects.toThrow(
      /does not fit this model: .*'unet\/final0\/kernel' must have shape/,
    );
    await expect(loadWeights(other, join(tmp, 'nowhere'))).rejects.toThrow(
      /cannot read weights .*nowhere\/model.json/,
    );
    writeFileSync(join(dir, 'weights.bin'), new Uint8Array(10));
    await expect(loadWeights(b, dir)).rejects.toThrow(
      /the weight shards hold 10 bytes but model.json describes \d+/,
    );
    a.dispose();
    b.dispose();
    other.dispose();
  });
});
