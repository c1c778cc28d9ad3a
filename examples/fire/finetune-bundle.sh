#!/usr/bin/env bash
# The bundled FIRE weights (packages/networks/weights/fire-2d): the first MI-trained bundle
# (600 steps, README "Commands") fine-tuned in stages by diagnose.mjs, each stage starting from
# the previous one's weights at its best validation step (known-field error on validation draws
# whose seeds are disjoint from training's and from evaluate-weights.mjs / evaluate-cli.mjs's
# test draws). See the README, "Fine-tuning for the field error".
#
#   bash examples/fire/finetune-bundle.sh [WORKDIR]    # then copy WORKDIR/<last stage> over
#                                                      # packages/networks/weights/fire-2d
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-/tmp/fire-finetune}
mkdir -p "$W"
D=examples/fire/src/diagnose.mjs
COMMON=(--max-displacement 0.2 --similarity mi --fixed-only --affine-uniform --regulariser diffusion --eval-every 50)

# stage 0: the first MI bundle (the README's diagnose.mjs … --save line)
[ -d "$W/stage0" ] || node $D --similarity mi --rates 2e-3,1e-3,1e-3 --max-displacement 0.2 \
  --steps 600 --eval-every 100 --save "$W/stage0"
# stage 1: training pairs like the test draws, diffusion regulariser 300 (best: step 250)
node $D --init "$W/stage0" "${COMMON[@]}" --rates 1e-3,1e-3,1e-3 --smooth-scale 300 \
  --steps 300 --validate 4 --step-offset 10000 --save "$W/stage1" --json "$W/stage1.json"
# stage 2: half the pairs without affine, rates 3e-4, diffusion 1000 (best: step 300)
node $D --init "$W/stage1" "${COMMON[@]}" --rates 3e-4,3e-4,3e-4 --zero-affine 0.5 \
  --smooth-scale 1000 --steps 300 --validate 6 --step-offset 20000 --save "$W/stage2" \
  --json "$W/stage2.json"
# stage 3: the MI term × 10 (and the diffusion weight × 10) (best: step 100)
node $D --init "$W/stage2" "${COMMON[@]}" --rates 3e-4,3e-4,3e-4 --zero-affine 0.5 \
  --similarity-weight 10 --smooth-scale 10000 --steps 300 --validate 6 --step-offset 30000 \
  --save "$W/stage3" --json "$W/stage3.json"
# stage 4: rates 1e-4, 90 % of the pairs without affine (best: step 50) = the bundled weights
# (the run that made them was started for 400 steps and stopped after step 300)
node $D --init "$W/stage3" "${COMMON[@]}" --rates 1e-4,1e-4,1e-4 --zero-affine 0.9 \
  --similarity-weight 10 --smooth-scale 10000 --steps 300 --validate 6 --step-offset 60000 \
  --save "$W/stage4" --json "$W/stage4.json"
echo "cp $W/stage4/* packages/networks/weights/fire-2d/   # to bundle them"
