/** `.wasm` files are embedded in the bundle as bytes (tsup `loader: { '.wasm': 'binary' }`). */
declare module '*.wasm' {
  const bytes: Uint8Array<ArrayBuffer>;
  export default bytes;
}
