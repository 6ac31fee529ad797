#!/usr/bin/env bash
# Session 17, plan 3: ProtoNet + DAGAN with the class-keeping residual G, fakes at meta-train
# only, 600 updates, seeds 0-2 (two one-thread processes). Paired against session 8's ProtoNet.
set -euo pipefail
OUT=${OUT:-/work/runs17}
mkdir -p "$OUT"
ROW='ProtoNet+DAGAN, class-keeping residual G, fakes at meta-train only=ProtoNet+DAGAN:gan.class_weight=1.0,gan.residual=true,gan.augment_at_test=false'
run() { .venv/bin/python benchmarks/gan_table.py --updates 600 --episodes 600 --no-generation --threads 1 --methods "$@"; }
( run --seeds 0 1 --extra "$ROW" --out "$OUT/protonet_ck_trainonly_s01" > "$OUT/protonet_ck_trainonly_s01.log" 2>&1 ) &
( run --seeds 2 --extra "$ROW" --out "$OUT/protonet_ck_trainonly_s2" > "$OUT/protonet_ck_trainonly_s2.log" 2>&1 ) &
wait
