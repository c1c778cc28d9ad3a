#!/usr/bin/env bash
# Builds every kernel module: src/wasm/warp.wasm from csrc/warp.c, lncc.c, mind.c and parzen.c, and src/wasm/conv.wasm
# from csrc/conv.c (freestanding C, no libc, no imports). Needs clang >= 14 with the
# wasm32 target and wasm-ld (Debian: apt-get install clang lld).
#
#   scripts/build-wasm.sh            # writes src/wasm/*.wasm
#   scripts/build-wasm.sh OUT_DIR    # writes OUT_DIR/*.wasm (used by check-wasm.sh)
#
# warp.wasm imports its memory (env.memory, shared, at most 4 GiB, 2 MiB initially: src/loader.ts
# creates it) and exports __stack_pointer, so that worker threads run their own instances on the
# same memory, each with its own stack (src/threads.ts).
#
# The output is deterministic: no debug info, no producers section, relative paths only.
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir="${1:-src/wasm}"
mkdir -p "$out_dir"
CLANG="${CLANG:-clang}"
"$CLANG" --target=wasm32 -O3 -std=c11 -Wall -Wextra -Werror \
  -msimd128 -mnontrapping-fptoint -mbulk-memory -msign-ext \
  -matomics -mmutable-globals -ffreestanding -nostdlib -fno-ident \
  -Wl,--no-entry -Wl,--strip-all \
  -Wl,--import-memory -Wl,--shared-memory -Wl,--max-memory=4294967296 \
  -Wl,--initial-memory=2097152 -Wl,--export=__stack_pointer \
  -o "$out_dir/warp.wasm" csrc/warp.c csrc/lncc.c csrc/mind.c csrc/parzen.c
chmod 644 "$out_dir/warp.wasm"
CLANG="$CLANG" bash scripts/build-conv.sh "$out_dir"
