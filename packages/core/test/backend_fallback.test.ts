/**
 * initBackend when the wasm backend cannot load its binary: the fallback to cpu warns once and
 * names the URL that failed. Its own file (its own process): tfjs cannot retry the wasm backend
 * with other paths once an initialisation has failed.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { initBackend, RegkitBackendError, tf } from '@regkit/core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

let server: Server;
let base = '';
const requests: string[] = [];
let answer: '404' | 'html' = '404';

beforeAll(async () => {
  // answers 404 to everything: a page whose bundler did not copy the .wasm files
  // or with an index page for every path (a single-page app's fallback)
  server = createServer((req, res) => {
    requests.push(req.url ?? '');
    if (answer === 'html') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<!doctype html><title>app</title>');
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/wasm/`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

const hasTfjsNode = () =>
  import('@tensorflow/tfjs-node' as string).then(
    () => true,
    () => false,
  );

describe('initBackend falls back from wasm to cpu with a warning naming the failed file', () => {
  it('default order: cpu, one warning with the 404 URL (onWarning)', async () => {
    if (await hasTfjsNode()) return; // the tensorflow backend would win before wasm is tried
    const warnings: string[] = [];
    const name = await initBackend(undefined, {
      wasmPaths: base,
      onWarning: (m) => warnings.push(m),
    });
    expect(name).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
    expect(warnings).toHaveLength(1);
    // Node has SIMD and no wasm threads: tfjs asks for the SIMD build
    expect(warnings[0]).toContain(`GET ${base}tfjs-backend-wasm-simd.wasm answered 404 Not Found`);
    expect(warnings[0]).toMatch(/falling back to the cpu backend/);
    expect(warnings[0]).toMatch(/wasmPaths/);
    expect(requests).toContain('/wasm/tfjs-backend-wasm-simd.wasm');
  });

  it('console.warn once for the same failure, however often initBackend is called', async () => {
    if (await hasTfjsNode()) return;
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      expect(await initBackend(undefined, { wasmPaths: base })).toBe('cpu');
      expect(await initBackend(undefined, { wasmPaths: base })).toBe('cpu');
      const ours = warn.mock.calls.filter((c) => String(c[0]).startsWith('initBackend():'));
      expect(ours).toHaveLength(1);
      expect(String(ours[0]![0])).toContain('answered 404');
    } finally {
      warn.mockRestore();
    }
  });

  it("an explicit 'wasm' throws the same reason instead of falling back", async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const p = initBackend('wasm', { wasmPaths: base });
      await expect(p).rejects.toThrow(RegkitBackendError);
      await expect(initBackend('wasm', { wasmPaths: base })).rejects.toThrow(
        `GET ${base}tfjs-backend-wasm-simd.wasm answered 404 Not Found`,
      );
    } finally {
      warn.mockRestore();
    }
  });

  it('a server that answers with its index page: says the file is not WebAssembly', async () => {
    answer = 'html';
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      await expect(initBackend('wasm', { wasmPaths: base })).rejects.toThrow(
        `GET ${base}tfjs-backend-wasm-simd.wasm answered 200 with text/html, not a WebAssembly module`,
      );
    } finally {
      warn.mockRestore();
      answer = '404';
    }
  });

  it('other paths after a failed start: says that tfjs takes none', async () => {
    await expect(initBackend('wasm', { wasmPaths: '/elsewhere/' })).rejects.toThrow(
      /failed to start earlier with wasmPaths ".*\/wasm\/" and tfjs takes no other paths/,
    );
  });

  it('rejects malformed wasmPaths, naming the missing files', async () => {
    await expect(initBackend('cpu', { wasmPaths: '' })).rejects.toThrow(/'wasmPaths' is empty/);
    await expect(
      initBackend('cpu', { wasmPaths: { 'tfjs-backend-wasm.wasm': '/a.wasm' } as never }),
    ).rejects.toThrow(
      /'wasmPaths' must be .* missing tfjs-backend-wasm-simd\.wasm, tfjs-backend-wasm-threaded-simd\.wasm/,
    );
  });
});
