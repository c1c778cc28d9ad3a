/**
 * The wasm heap guard: a tensor that would not fit the 4 GiB heap throws a RegkitMemoryError
 * naming the fix (never a bare abort or a write through a null pointer), the backend stays
 * usable, and withWasmHeapFallback moves to cpu keeping live tensors.
 */

import {
  DEFAULT_WASM_HEAP_BUDGET_BYTES,
  initBackend,
  RegkitMemoryError,
  setWasmHeapBudget,
  tf,
  WASM_HEAP_LIMIT_BYTES,
  wasmHeapTensorBytes,
  withWasmHeapFallback,
} from '@regkit/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const GiB = 2 ** 30;

/**
 * A float32 tensor of n elements allocated by the backend as a kernel output, left as the
 * allocator returns it: the guard runs as for any kernel, but no page is written (fast, no
 * resident memory for the GiB-sized tensors below).
 */
const allocate = (n: number): tf.Tensor => {
  const backend = tf.backend() as unknown as {
    makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  };
  return tf.engine().makeTensorFromTensorInfo(backend.makeOutput([n], 'float32'));
};

describe('wasm heap guard', () => {
  beforeEach(async () => {
    expect(await initBackend('wasm')).toBe('wasm');
  });
  afterEach(() => {
    setWasmHeapBudget();
  });

  it('counts the tensors on the heap', () => {
    const before = wasmHeapTensorBytes();
    const x = tf.zeros([1000, 1000]);
    expect(wasmHeapTensorBytes() - before).toBe(4e6);
    x.dispose();
    expect(wasmHeapTensorBytes()).toBe(before);
  });

  it('at the real 4 GiB limit: a clear error instead of an abort, and the backend stays usable', () => {
    expect(DEFAULT_WASM_HEAP_BUDGET_BYTES).toBe(3.5 * GiB);
    const numTensors = tf.memory().numTensors;
    const held: tf.Tensor[] = [];
    // 1 GiB tensors: the fourth would take the tensors to 4 GiB > the 3.5 GiB budget
    let error: unknown;
    try {
      for (let i = 0; i < 5; i++) held.push(allocate(GiB / 4));
    } catch (e) {
      error = e;
    }
    expect(held.length).toBe(3);
    expect(error).toBeInstanceOf(RegkitMemoryError);
    const message = (error as Error).message;
    expect(message).toMatch(/float32 tensor of shape \[268435456\] \(1\.00 GiB\) does not fit/);
    expect(message).toMatch(/3\.00 GiB of tensors are on the heap and its budget is 3\.50 GiB/);
    expect(message).toMatch(/initBackend\('cpu'/);
    expect((error as RegkitMemoryError).inUseBytes).toBe(3 * GiB);
    // with the budget at the hard limit, the allocator itself finds no room: still an error
    setWasmHeapBudget(WASM_HEAP_LIMIT_BYTES);
    expect(() => held.push(allocate(GiB / 4))).toThrow(/its allocator found no room/);
    expect(held.length).toBe(3);
    expect(tf.memory().numTensors).toBe(numTensors + 3);
    // the freed memory can be used again, and the backend still computes
    tf.dispose(held.splice(0));
    const y = allocate(GiB / 4);
    const sum = tf.tidy(() => tf.sum(tf.add(tf.fill([1000], 0.5), tf.fill([1000], 0.5))));
    expect(sum.dataSync()[0]).toBe(1000);
    tf.dispose([y, sum]);
    expect(tf.memory().numTensors).toBe(numTensors);
  });

  it('withWasmHeapFallback moves to cpu with one warning, keeping live tensors', async () => {
    const w = tf.variable(tf.tensor([1, 2, 3, 4]));
    setWasmHeapBudget(2 ** 20);
    expect(() => tf.zeros([512, 1024])).toThrow(RegkitMemoryError);
    const warnings: string[] = [];
    let attempts = 0;
    const total = await withWasmHeapFallback(
      () => {
        attempts++;
        return tf.tidy(() => tf.sum(tf.add(tf.zeros([512, 1024]), tf.sum(w))).dataSync()[0]);
      },
      { what: 'the test sum', warn: (m) => warnings.push(m) },
    );
    expect(attempts).toBe(2);
    expect(total).toBe(512 * 1024 * 10);
    expect(tf.getBackend()).toBe('cpu');
    expect(warnings.length).toBe(1);
    expect(warnings[0]).toMatch(/^regkit: the test sum needs more than the wasm backend's heap/);
    expect(warnings[0]).toMatch(/moving to the cpu backend/);
    expect(Array.from(w.dataSync())).toEqual([1, 2, 3, 4]);
    w.dispose();
    // a tensor that would not fit when tfjs moves it back into wasm keeps its data
    const big = tf.fill([512, 1024], 2);
    await tf.setBackend('wasm');
    expect(() => tf.sum(big)).toThrow(RegkitMemoryError);
    await tf.setBackend('cpu');
    expect(big.dataSync()[512 * 1024 - 1]).toBe(2);
    big.dispose();
    // errors that are not about memory are not retried
    await expect(
      withWasmHeapFallback(() => {
        throw new Error('other');
      }),
    ).rejects.toThrow('other');
  });
});
