#!/usr/bin/env bash
# Rebuilds the wasm kernels into a temporary folder and fails (exit 1) when the bytes
# differ from the committed src/wasm/*.wasm (csrc changed without `pnpm build:kernels`,
# or a compiler that produces other code).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
bash scripts/build-wasm.sh "$tmp"
status=0
for built in "$tmp"/*.wasm; do
  name="$(basename "$built")"
  if ! cmp -s "$built" "src/wasm/$name"; then
    echo "check:kernels: src/wasm/$name differs from a fresh build of csrc/ (run pnpm build:kernels)" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "check:kernels: src/wasm matches csrc/"
exit "$status"
