import { createRequire } from 'node:module';
import { defineConfig } from 'tsup';

const require = createRequire(import.meta.url);

const common = {
  format: ['esm'] as const,
  sourcemap: true,
};

export default defineConfig([
  {
    // Node (`exports` condition "node"): tfjs-core's Node entry point is CommonJS and registers
    // no gradients, and its ESM registration modules cannot be imported by Node (extensionless
    // imports), so those two modules are inlined. They register into tfjs's global registries,
    // which every copy of tfjs-core shares.
    ...common,
    entry: { index: 'src/index.ts' },
    dts: true,
    clean: true,
    target: 'node20',
    external: [/^@tensorflow\/(?!tfjs-core\/dist\/)/],
    noExternal: [/^@tensorflow\/tfjs-core\/dist\//],
    esbuildPlugins: [
      {
        name: 'inline-tfjs-core-registrations',
        setup(build) {
          build.onResolve({ filter: /^@tensorflow\/tfjs-core\/dist\// }, (args) => ({
            path: require.resolve(`${args.path}.js`),
            sideEffects: true,
          }));
        },
      },
    ],
  },
  {
    // Browsers and bundlers ("browser" and "default"): every @tensorflow import stays an import,
    // so a bundler resolves the registrations to the application's own tfjs-core (one copy).
    ...common,
    entry: { 'index.browser': 'src/index.ts' },
    dts: false,
    clean: false,
    target: 'es2022',
    platform: 'browser',
    external: [/^@tensorflow\//],
  },
]);
