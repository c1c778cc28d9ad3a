#!/usr/bin/env bash
# Builds the kernel module src/wasm/warp.wasm from csrc/warp.c, lncc.c, mind.c, parzen.c,
# conv.c, jacobian.c and elementwise.c (freestanding C, no libc). Needs clang >= 14 with the wasm32 target and wasm-ld
# (Debian: apt-get install clang lld).
#
#   scripts/build-wasm.sh            # writes src/wasm/*.wasm
#   scripts/build-wasm.sh OUT_DIR    # writes OUT_DIR/*.wasm (used by check-wasm.sh)
#
# warp.wasm imports its memory (env.memory, shared, at most 4 GiB, 2 MiB initially: src/loader.ts
# creates it) and exports __stack_pointer, so that worker threads run their own instances on the
# same memory, each with its own stack (src/threads.ts).
#
# Extra compiler flags (e.g. -DGATHER_NB4=3 to try other register blockings of csrc/conv.c)
# can be given in KERNEL_CFLAGS; the committed binary is built without them.
#
# The output is deterministic: no debug info, no producers section, relative paths only.
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir="${1:-src/wasm}"
mkdir -p "$out_dir"
CLANG="${CLANG:-clang}"
# shellcheck disable=SC2086
"$CLANG" --target=wasm32 -O3 -std=c11 -Wall -Wextra -Werror \
  -msimd128 -mnontrapping-fptoint -mbulk-memory -msign-ext \
  -matomics -mmutable-globals -ffreestanding -nostdlib -fno-ident ${KERNEL_CFLAGS:-} \
  -Wl,--no-entry -Wl,--strip-all \
  -Wl,--import-memory -Wl,--shared-memory -Wl,--max-memory=4294967296 \
  -Wl,--initial-memory=2097152 -Wl,--export=__stack_pointer \
  -o "$out_dir/warp.wasm" csrc/warp.c csrc/lncc.c csrc/mind.c csrc/parzen.c csrc/conv.c \
  csrc/jacobian.c csrc/elementwise.c
chmod 644 "$out_dir/warp.wasm"
