import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tf } from '@regkit/core';
import {
  createVoxelMorph,
  loadRegistrationNetwork,
  networkMethods,
  saveRegistrationNetwork,
} from '@regkit/networks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useBackend } from './helpers.js';

let dir: string;
beforeAll(async () => {
  await useBackend('cpu');
  dir = mkdtempSync(join(tmpdir(), 'regkit-pretrained-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const options = { ndim: 2, encoder: [4, 8], decoder: [8, 8, 4], seed: 5 } as const;

describe('saveRegistrationNetwork / loadRegistrationNetwork', () => {
  it('rebuilds the model from the metadata and predicts what the original predicts', async () => {
    expect(networkMethods()).toContain('voxelmorph');
    const model = createVoxelMorph(options);
    // non-trivial flow head so the prediction depends on the weights
    tf.tidy(() =>
      model.flow.kernel.assign(tf.randomNormal(model.flow.kernel.shape, 0, 0.1, 'float32', 7)),
    );
    const out = join(dir, 'vxm');
    await saveRegistrationNetwork(out, model, {
      method: 'voxelmorph',
      options: { ...options },
      inputShape: [32, 32],
      description: 'test',
    });
    const net = await loadRegistrationNetwork(out);
    expect(net.metadata.inputShape).toEqual([32, 32]);
    expect(net.metadata.description).toBe('test');
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const m = tf.randomUniform([1, 32, 32, 1], 0, 1, 'float32', 1);
      const f = tf.randomUniform([1, 32, 32, 1], 0, 1, 'float32', 2);
      const expected = model.apply(m, f);
      const got = net.predict(m, f);
      expect(tf.max(tf.abs(expected.forward)).dataSync()[0]!).toBeGreaterThan(1e-3);
      expect(got.forward.arraySync()).toEqual(expected.forward.arraySync());
      expect(got.inverse!.arraySync()).toEqual(expected.inverse!.arraySync());
    });
    expect(tf.memory().numTensors).toBe(before);
    net.dispose();
    model.dispose();
  });

  it('names the directory and the problem on bad input', async () => {
    await expect(loadRegistrationNetwork(join(dir, 'absent'))).rejects.toThrow(
      /absent has no model\.json/,
    );
    const model = createVoxelMorph(options);
    await expect(
      saveRegistrationNetwork(join(dir, 'bad'), model, {
        method: 'nonesuch',
        options: {},
        inputShape: [32, 32],
      }),
    ).rejects.toThrow(/'method' must be one of .*voxelmorph.*got "nonesuch"/);
    await expect(
      saveRegistrationNetwork(join(dir, 'bad'), model, {
        method: 'voxelmorph',
        options: { ...options },
        inputShape: [32],
      }),
    ).rejects.toThrow(/'inputShape' must be 2 or 3 positive integers/);
    // weights of another architecture
    const other = join(dir, 'other');
    await saveRegistrationNetwork(other, model, {
      method: 'voxelmorph',
      options: { ...options },
      inputShape: [32, 32],
    });
    const json = JSON.parse(readFileSync(join(other, 'model.json'), 'utf8')) as {
      userDefinedMetadata: { options: { encoder: number[] } };
    };
    json.userDefinedMetadata.options.encoder = [4, 16];
    writeFileSync(join(other, 'model.json'), JSON.stringify(json));
    const before = tf.memory().numTensors;
    await expect(loadRegistrationNetwork(other)).rejects.toThrow(/does not fit a voxelmorph model/);
    expect(tf.memory().numTensors).toBe(before); // nothing leaks on failure
    model.dispose();
  });
});
