#!/usr/bin/env bash
# Rebuild the bundled offline model assets/mini/mini_clip_shapes.pt and its metrics.
# Deterministic data (Shapes, seed 0), float32 on the CPU; about 15 minutes on 2 free CPU cores.
# Usage: bash assets/mini/train_bundled.sh   (PYTHON=.venv/bin/python to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
RUN=${RUN:-runs/mini_shapes}

# 1. train from scratch: ResNet18 + Transformer text tower, 5000 Shapes images at 64x64
$PY -m core.train --data shapes --text-encoder transformer --epochs 10 --batch-size 64 --lr 1e-3 \
    --seed 0 --augment --device cpu --out "$RUN" --name shapes --no-progress
# 2. the shipped file: best epoch, large weight matrices stored 4-bit (group 32, fp16 scales)
$PY -m core.train export "$RUN/best.pt" assets/mini/mini_clip_shapes.pt --bits 4 --name shapes
# 3. held-out test metrics of exactly the shipped file (MODEL_CARD.md quotes these)
$PY -m core.train evaluate assets/mini/mini_clip_shapes.pt --data shapes --split test --json assets/mini/metrics.json
cp "$RUN/test_metrics.json" assets/mini/metrics_fp32.json
