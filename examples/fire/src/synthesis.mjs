/**
 * Writes the synthesis pictures (x^A | F^{A→B}(G(x^A)) | x^B, middle held-out pair) of the FIRE
 * networks saved by run.mjs in `<out>/networks/<task>-<fire|fire-mi>`, without training:
 * `node examples/fire/src/synthesis.mjs [--out examples/fire/results] [--size 64] [--affine 0.2]`.
 * With `--weights DIR --png PATH`, the picture of that network on the ITK pair instead (e.g. the
 * bundled weights, packages/networks/weights/fire-2d).
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { initExampleBackend } from '@regkit/example-common/backend';
import { disposePair } from '@regkit/example-common/slices';
import { loadRegistrationNetwork } from '@regkit/networks';
import { DATASETS, synthesisPng, testPairs } from './pairs.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    out: { type: 'string', default: join(here, '../results') },
    size: { type: 'string', default: '64' },
    affine: { type: 'string', default: '0.2' },
    deformations: { type: 'string', default: '2' },
    weights: { type: 'string' },
    png: { type: 'string' },
  },
});
await initExampleBackend();
if (args.weights) {
  const dataset = await DATASETS(Number(args.size)).itk();
  const net = await loadRegistrationNetwork(args.weights);
  const pairs = testPairs(dataset, Number(args.deformations), Number(args.affine));
  await synthesisPng(args.png, net.model, pairs[pairs.length >> 1]);
  console.log(`wrote ${args.png}`);
  for (const p of pairs) disposePair(p);
  net.dispose();
  process.exit(0);
}
for (const [key, load] of Object.entries(DATASETS(Number(args.size)))) {
  for (const tag of ['fire', 'fire-mi']) {
    const dir = join(args.out, 'networks', `${key}-${tag}`);
    if (!existsSync(join(dir, 'model.json'))) continue;
    const dataset = await load();
    if (!dataset) continue;
    const net = await loadRegistrationNetwork(dir);
    const pairs = testPairs(dataset, Number(args.deformations), Number(args.affine));
    const path = join(args.out, `synthesis-${key}-${tag}.png`);
    await synthesisPng(path, net.model, pairs[pairs.length >> 1]);
    console.log(`wrote ${path}`);
    for (const p of pairs) disposePair(p);
    net.dispose();
  }
}
