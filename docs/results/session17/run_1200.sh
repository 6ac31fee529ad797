#!/usr/bin/env bash
# Session 17: FOMAML and FOMAML + DAGAN (class-keeping residual G) at 1200 updates, seeds 0-2,
# and MetaGAN with fake weight 0 on seeds 1-2 at 600 updates; two one-thread processes.
set -euo pipefail
OUT=${OUT:-/work/runs17}
mkdir -p "$OUT"
CK='FOMAML+DAGAN, class-keeping residual G=FOMAML+DAGAN:gan.class_weight=1.0,gan.residual=true'
run() { .venv/bin/python benchmarks/gan_table.py --episodes 600 --no-generation --threads 1 "$@"; }
( run --updates 1200 --seeds 0 1 --methods FOMAML --extra "$CK" --out "$OUT/fomaml1200_s01" \
    > "$OUT/fomaml1200_s01.log" 2>&1 ) &
( run --updates 1200 --seeds 2 --methods FOMAML --extra "$CK" --out "$OUT/fomaml1200_s2" \
    > "$OUT/fomaml1200_s2.log" 2>&1
  run --updates 600 --seeds 1 2 --methods --extra 'MetaGAN, fake weight 0=MetaGAN:gan.fake_weight=0' \
    --out "$OUT/metagan_fw0_s12" > "$OUT/metagan_fw0_s12.log" 2>&1 ) &
wait
