#!/usr/bin/env bash
# The embedded end-to-end job: which pool examples does each representation pick for SciQ?
# Chains stages by artifact id, exactly as a user's shell script or Makefile would.
set -euo pipefail
T="${TSELECT:-$(dirname "$0")/../.venv/bin/tselect}"
TARGET="${TARGET:-sciq}"
POOL="${POOL:-builtin:pool-small}"   # POOL=builtin:pool for the 2,396-row pool (RDS+ then takes ~10 min on 2 cores)
BUDGET="${BUDGET:-64}"

$T assets
for REP in embed rds; do
  echo "== $REP: featurize $POOL and builtin:$TARGET" >&2
  F=$($T featurize --rep "$REP" --pool "$POOL" --query "builtin:$TARGET" --max-length 192)
  RR=$($T select --features "$F" --selector round_robin --budget "$BUDGET")
  TOP=$($T select --features "$F" --selector topk --budget "$BUDGET")
  RND=$($T select --features "$F" --selector random --budget "$BUDGET" --seed 0)
  $T mix "$RR" "$TOP" "$RND"
done
