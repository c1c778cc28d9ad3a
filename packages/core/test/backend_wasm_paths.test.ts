/**
 * initBackend('wasm', { wasmPaths }): the caller says where the .wasm files are (what a page
 * does) and needs no import of @tensorflow/tfjs-backend-wasm. Its own file (its own process),
 * so the wasm backend starts here with these paths.
 */
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { initBackend, tf, WASM_FILE_NAMES, wasmFileLocation } from '@regkit/core';
import { describe, expect, it } from 'vitest';

// the folder of the installed @tensorflow/tfjs-backend-wasm (core's dependency)
const coreRequire = createRequire(createRequire(import.meta.url).resolve('@regkit/core'));
const folder = `${dirname(coreRequire.resolve('@tensorflow/tfjs-backend-wasm'))}/`;

describe("initBackend('wasm', { wasmPaths })", () => {
  it('starts the wasm backend from the given folder, with no warning', async () => {
    const warnings: string[] = [];
    const fileMap = Object.fromEntries(WASM_FILE_NAMES.map((f) => [f, `${folder}${f}`]));
    expect(await wasmFileLocation(folder)).toBe(`${folder}tfjs-backend-wasm-simd.wasm`);
    expect(await wasmFileLocation(fileMap as never)).toBe(`${folder}tfjs-backend-wasm-simd.wasm`);
    expect(
      await initBackend('wasm', { wasmPaths: folder, onWarning: (m) => warnings.push(m) }),
    ).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(tf.add(tf.tensor1d([1, 2]), 3).dataSync()).toEqual(new Float32Array([4, 5]));
    // once started, paths are ignored (tfjs cannot move its files)
    expect(await initBackend('wasm', { wasmPaths: '/elsewhere/' })).toBe('wasm');
    expect(warnings).toEqual([]);
  });

  it('kernels that fail to start warn and leave the backend running', async () => {
    const warnings: string[] = [];
    const kernels = {
      initKernels: () => Promise.reject(new Error('WebAssembly SIMD is not supported here')),
      registerKernels: () => {},
    };
    expect(await initBackend('wasm', { kernels, onWarning: (m) => warnings.push(m) })).toBe('wasm');
    expect(warnings).toEqual([
      "initBackend(): @regkit/kernels could not start on wasm (WebAssembly SIMD is not supported here); running regkit's JavaScript kernels, which are slower",
    ]);
  });
});
