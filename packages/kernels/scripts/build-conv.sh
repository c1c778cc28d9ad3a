#!/usr/bin/env bash
# Builds src/wasm/conv.wasm from csrc/conv.c (freestanding C, no libc, no imports).
# Needs clang >= 14 with the wasm32 target and wasm-ld (Debian: apt-get install clang lld).
#
#   scripts/build-conv.sh            # writes src/wasm/conv.wasm
#   scripts/build-conv.sh OUT_DIR    # writes OUT_DIR/conv.wasm
#
# Extra compiler flags (e.g. -DGATHER_NB4=3 to try other register blockings) can be given
# in CONV_CFLAGS; the committed binary is built without them. The output is deterministic:
# no debug info, no producers section, relative paths only.
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir="${1:-src/wasm}"
mkdir -p "$out_dir"
CLANG="${CLANG:-clang}"
# shellcheck disable=SC2086
"$CLANG" --target=wasm32 -O3 -std=c11 -Wall -Wextra -Werror \
  -msimd128 -mnontrapping-fptoint -mbulk-memory -msign-ext \
  -ffreestanding -nostdlib -fno-ident ${CONV_CFLAGS:-} \
  -Wl,--no-entry -Wl,--strip-all \
  -o "$out_dir/conv.wasm" csrc/conv.c
chmod 644 "$out_dir/conv.wasm"
