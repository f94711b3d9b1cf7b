#!/usr/bin/env bash
# The embedded end-to-end job: LESS (with its warmup) on a slice of the embedded pool,
# round-robin selection for SciQ, fine-tunes on the selection and on random subsets, loss
# evaluation, a report, and one headline line: the paired query-loss difference with its 95% CI.
# Chains stages by artifact id, exactly as a user's shell script or Makefile would.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="${BIN:-$HERE/../.venv/bin}"
T="${TSELECT:-$BIN/tselect}"
STORE="${TSELECT_STORE:-.tselect}"
mkdir -p "$STORE"
export TSELECT_DEMO_POOL="$(cd "$STORE" && pwd)/demo_pool.jsonl"

$T assets
# The slice: every 5th row of builtin:pool-small (80 rows, 5 from each of the 16 source tasks), as JSONL.
"$BIN/python" - "$TSELECT_DEMO_POOL" <<'PY'
import json, sys
from tselect.data import load_dataset
rows = load_dataset("builtin:pool-small").examples[::5]
with open(sys.argv[1], "w") as f:
    f.writelines(json.dumps({k: v for k, v in ex.to_json().items() if k != "id"}) + "\n" for ex in rows)
PY
E=$($T run "$HERE/experiments/demo.toml")
R=$($T report "$E" --metric query_loss --out "${OUT:-reports/demo}")
"$BIN/python" - "$($T path "$R")/summary.json" <<'PY'
import json, sys
print(json.load(open(sys.argv[1]))["headlines"][0])
PY
