#!/usr/bin/env bash
# One cell of an experiment by hand, then the same study as a grid, then its report.
# Every command prints an artifact id as its last stdout line, so stages chain by id; rerunning
# any line is a no-op that prints the same id. Small settings: minutes on a laptop CPU.
set -euo pipefail
T="${TSELECT:-$(dirname "$0")/../.venv/bin/tselect}"
TARGET="${TARGET:-sciq}"
OUT="${OUT:-reports/pipeline}"

# --- one cell: rds + round_robin at budget 16, seed 0 ------------------------------------------
F=$($T featurize --rep rds --pool builtin:pool-small --query "builtin:$TARGET" --max-length 128)
S=$($T select --features "$F" --selector round_robin --budget 32)      # budget 16 is its prefix
FT=$($T finetune --selection "$S" --budget 16 --epochs 1 --max-length 128 --lr 3e-4 \
        --batch-size 4 --effective-batch-size 4 --seed 0)
EV=$($T evaluate --target "builtin:$TARGET" --finetune "$FT" --limit 50 --max-length 256)
ZS=$($T evaluate --target "builtin:$TARGET" --limit 50 --max-length 256)   # zero-shot reference
D=$($T distance --features "$F" --selection "$S" --budget 16 --budget 32)  # predict before training
$T show "$EV" | grep -E '"(query_loss|acc_norm)"' >&2

# --- the same study as a grid (reuses the artifacts above), then the report ----------------------
$T run --dry-run "$(dirname "$0")/experiments/smoke.toml"                 # what will run, how long
E=$($T run "$(dirname "$0")/experiments/smoke.toml")
R=$($T report "$E" --out "$OUT")
echo "report $R in $OUT/report.html (read it with examples/reading-a-report.md)" >&2
