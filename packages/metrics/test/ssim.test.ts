/** SSIM against scikit-image (test/fixtures/make_ssim_fixtures.py → ssim_fixtures.json). */
import { readFileSync } from 'node:fs';
import { initBackend, tf } from '@regkit/core';
import { ssim, ssimMap } from '@regkit/metrics';
import { beforeAll, describe, expect, it } from 'vitest';

interface ArrayFixture {
  shape: number[];
  data: number[];
}
const cases = (
  JSON.parse(readFileSync(new URL('./fixtures/ssim_fixtures.json', import.meta.url), 'utf8')) as {
    cases: Array<{
      name: string;
      params: { dataRange: number };
      inputs: Record<string, ArrayFixture>;
      outputs: Record<string, ArrayFixture>;
    }>;
  }
).cases;

describe.each(['cpu', 'wasm'] as const)('ssim on %s', (backend) => {
  beforeAll(async () => {
    expect(await initBackend(backend)).toBe(backend);
  });

  it.each(cases)('$name', async (c) => {
    const before = tf.memory().numTensors;
    const a = tf.tensor(c.inputs.a!.data, c.inputs.a!.shape);
    const b = tf.tensor(c.inputs.b!.data, c.inputs.b!.shape);
    expect(await ssim(a, b, { intensityRange: c.params.dataRange })).toBeCloseTo(
      c.outputs.ssim!.data[0]!,
      5,
    );
    const map = ssimMap(a, b, c.params.dataRange);
    const got = map.dataSync();
    const exp = c.outputs.map!.data;
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - exp[i]!));
    expect(worst).toBeLessThan(1e-4);
    tf.dispose([a, b, map]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('is 1 for identical images', async () => {
    const a = tf.randomUniform([1, 16, 16, 1], 0, 1, 'float32', 2);
    expect(await ssim(a, a)).toBeCloseTo(1, 6);
    a.dispose();
  });
});
