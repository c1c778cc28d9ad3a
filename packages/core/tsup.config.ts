import { createRequire } from 'node:module';
import { defineConfig } from 'tsup';

const require = createRequire(import.meta.url);

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  external: [/^@tensorflow\/(?!tfjs-core\/dist\/)/],
  noExternal: [/^@tensorflow\/tfjs-core\/dist\//],
  esbuildPlugins: [
    {
      // tfjs-core's ESM gradient registrations cannot be imported by Node directly
      // (extensionless imports), so they are inlined. They register into tfjs's
      // global registry, which is shared with the tfjs-core peer dependency.
      name: 'inline-tfjs-core-registrations',
      setup(build) {
        build.onResolve({ filter: /^@tensorflow\/tfjs-core\/dist\// }, (args) => ({
          path: require.resolve(`${args.path}.js`),
          sideEffects: true,
        }));
      },
    },
  ],
});
