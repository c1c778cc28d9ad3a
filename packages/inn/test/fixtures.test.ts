/**
 * Every block against PyTorch ports of the INNReg paper and official code
 * (fixtures/make_inn_fixtures.py → inn_fixtures.json), with the same random weights (no
 * zero-initialised layers): outputs, input gradients of sum(y ⊙ r) and weight gradients;
 * coupling blocks also against the log-determinant of the full autograd Jacobian.
 */
import { tf } from '@regkit/core';
import {
  AffineCouplingBlock,
  createInvertibleTranslator,
  DdwDenseBlock,
  DenseBlock,
  DynamicDepthwiseConv,
  type DynamicKernelMode,
  ddwDenseBlockSubnet,
  denseBlockSubnet,
  InvertibleConv1x1,
  squeeze,
  unsqueeze,
} from '@regkit/inn';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  BACKENDS,
  expectClose,
  type FixtureCase,
  loadCases,
  tensorOf,
  useBackend,
  weightsOf,
} from './helpers.js';

const cases = loadCases();

/** Gradients of sum(fn(x) ⊙ r) with respect to x and `vars`. */
function gradsOf(fn: (x: tf.Tensor) => tf.Tensor, x: tf.Tensor, r: tf.Tensor, vars: tf.Variable[]) {
  const dx = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(fn(t), r)))(x);
  const { grads } = tf.variableGrads(() => tf.sum(tf.mul(fn(x), r)) as tf.Scalar, vars);
  return { dx, dvars: vars.map((v) => grads[v.name]!) };
}

function variable(
  module: { namedVariables(): Array<[string, tf.Variable]> },
  path: string,
): tf.Variable {
  const found = module.namedVariables().find(([p]) => p === path);
  expect(found, `weight ${path}`).toBeDefined();
  return found![1];
}

/** The union of the fixture cases' parameters (each case uses some). */
interface CaseParams {
  ndim: 2 | 3;
  inChannels: number;
  outChannels: number;
  channels: number;
  growth: number;
  kernelSize: number;
  mode: DynamicKernelMode;
  bases: number;
  reduction: number;
  split: number;
  subnet: 'dense' | 'ddw';
  factor: number;
  blocks: number;
  attention: { k: number; kernelSize: number; bases: number; reduction: number };
}

function runCase(c: FixtureCase): void {
  const p = c.params as unknown as CaseParams;
  const x = tensorOf(c.inputs.x!);
  const weights = weightsOf(c);
  if (c.op === 'dense') {
    const block = new DenseBlock(p.ndim, p.inChannels, p.outChannels, { growth: p.growth });
    block.setWeights(weights);
    const r = tensorOf(c.inputs.r!);
    const names = ['conv1/kernel', 'conv5/kernel', 'conv5/bias'];
    const { dx, dvars } = gradsOf(
      (t) => block.apply(t),
      x,
      r,
      names.map((n) => variable(block, n)),
    );
    expectClose(block.apply(x), c.outputs.y!, 1e-4, 1e-4, 'y');
    expectClose(dx, c.outputs.dx!, 1e-4, 1e-4, 'dx');
    for (const [i, n] of names.entries()) expectClose(dvars[i]!, c.outputs[n]!, 2e-4, 1e-4, n);
    block.dispose();
  } else if (c.op === 'ddw') {
    const conv = new DynamicDepthwiseConv(p.ndim, p.channels, {
      kernelSize: p.kernelSize,
      mode: p.mode,
      bases: p.bases,
      reduction: p.reduction,
    });
    conv.setWeights(weights);
    const r = tensorOf(c.inputs.r!);
    const names = Object.keys(c.outputs).filter((k) => k !== 'y' && k !== 'dx');
    const { dx, dvars } = gradsOf(
      (t) => conv.apply(t),
      x,
      r,
      names.map((n) => variable(conv, n)),
    );
    expectClose(conv.apply(x), c.outputs.y!, 1e-4, 1e-4, 'y');
    expectClose(dx, c.outputs.dx!, 1e-4, 1e-4, 'dx');
    for (const [i, n] of names.entries()) expectClose(dvars[i]!, c.outputs[n]!, 2e-4, 1e-4, n);
    conv.dispose();
  } else if (c.op === 'ddw_dense') {
    const a = p.attention as { kernelSize: number; bases: number; reduction: number };
    const block = new DdwDenseBlock(p.ndim, p.inChannels, p.outChannels, {
      growth: p.growth,
      attention: a,
    });
    block.setWeights(weights);
    const r = tensorOf(c.inputs.r!);
    expectClose(block.apply(x), c.outputs.y!, 1e-4, 1e-4, 'y');
    const dx = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(block.apply(t), r)))(x);
    expectClose(dx, c.outputs.dx!, 1e-4, 1e-4, 'dx');
    block.dispose();
  } else if (c.op === 'invconv') {
    const conv = new InvertibleConv1x1(p.channels);
    conv.setWeights(weights);
    const fwd = conv.forward(x);
    expectClose(conv.weight(), c.outputs.weight!, 1e-5, 1e-5, 'W');
    expectClose(conv.inverseWeight(), c.outputs.inverseWeight!, 1e-5, 1e-4, 'W⁻¹');
    expectClose(fwd.output, c.outputs.y!, 1e-5, 1e-5, 'y');
    expectClose(fwd.logDeterminant, c.outputs.logdet!, 1e-4, 1e-5, 'logdet');
    const inv = conv.inverse(fwd.output);
    expectClose(inv.output, c.outputs.inverse!, 1e-5, 1e-5, 'inverse');
    expectClose(inv.logDeterminant, c.outputs.logdetInverse!, 1e-4, 1e-5, 'logdet of the inverse');
    conv.dispose();
  } else if (c.op === 'coupling') {
    const a = p.attention;
    const subnet =
      p.subnet === 'dense'
        ? denseBlockSubnet({ growth: p.growth })
        : ddwDenseBlockSubnet({
            growth: p.growth,
            attention: { kernelSize: a.k, bases: a.bases, reduction: a.reduction },
          });
    const block = new AffineCouplingBlock(p.ndim, p.channels, { split: p.split, subnet });
    block.setWeights(weights);
    const r = tensorOf(c.inputs.r!);
    const q = tensorOf(c.inputs.q!);
    const fwd = block.forward(x);
    expectClose(fwd.output, c.outputs.y!, 1e-4, 1e-4, 'y');
    expectClose(fwd.logDeterminant, c.outputs.logdet!, 1e-4, 1e-5, 'logdet');
    // the log-determinant against the brute-force Jacobian of the PyTorch port
    expectClose(fwd.logDeterminant, c.outputs.logdetBruteForce!, 1e-4, 1e-5, 'logdet (Jacobian)');
    const inv = block.inverse(tensorOf(c.outputs.y!));
    expectClose(inv.output, c.outputs.inverse!, 1e-4, 1e-4, 'inverse');
    expectClose(inv.logDeterminant, c.outputs.logdetInverse!, 1e-4, 1e-5, 'logdet of the inverse');
    const dx = tf.grad((t: tf.Tensor) => {
      const o = block.forward(t);
      return tf.add(tf.sum(tf.mul(o.output, r)), tf.sum(tf.mul(o.logDeterminant, q)));
    })(x);
    expectClose(dx, c.outputs.dx!, 2e-4, 1e-4, 'dx');
    block.dispose();
  } else if (c.op === 'squeeze') {
    const y = squeeze(x, p.factor);
    // a permutation: exact (both sides float32)
    expectClose(y, tensorOf(c.outputs.y!), 0, 0, 'y');
    expectClose(unsqueeze(y, p.factor), x, 0, 0, 'x');
  } else if (c.op === 'translator') {
    const translator = createInvertibleTranslator({
      ndim: p.ndim,
      channels: p.channels,
      blocks: p.blocks,
      subnet: denseBlockSubnet({ growth: p.growth }),
    });
    translator.setWeights(weights);
    const fwd = translator.forward(x);
    expectClose(fwd.output, c.outputs.y!, 1e-4, 1e-4, 'y');
    expectClose(fwd.logDeterminant, c.outputs.logdet!, 1e-4, 1e-5, 'logdet');
    translator.dispose();
  } else {
    throw new Error(`unknown fixture op ${c.op}`);
  }
  tf.dispose(Object.values(weights));
}

describe.each(BACKENDS)('against PyTorch on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });

  for (const c of cases) {
    it(c.name, () => {
      tf.tidy(() => runCase(c));
    });
  }
});
