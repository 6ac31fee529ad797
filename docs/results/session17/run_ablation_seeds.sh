#!/usr/bin/env bash
# Session 17, plan 4: four seed-0 ablations on seeds 1 and 2 (one one-thread process per seed;
# SEEDS=2 runs one of them, as was done: seed 2 first, seed 1 when a core came free).
set -euo pipefail
OUT=${OUT:-/work/runs17}
mkdir -p "$OUT"
ROWS=('ProtoNet+DAGAN, 1 fake per real=ProtoNet+DAGAN:gan.augment=1'
      'ProtoNet+DAGAN, fake weight 0.25=ProtoNet+DAGAN:gan.fake_weight=0.25'
      'FOMAML, instance norm=FOMAML:model.batch_norm=instance'
      'FOMAML+DAGAN, instance norm=FOMAML+DAGAN:model.batch_norm=instance')
for s in ${SEEDS:-1 2}; do
  ( .venv/bin/python benchmarks/gan_table.py --updates 600 --seeds $s --episodes 600 --no-generation \
      --threads 1 --methods --extra "${ROWS[@]}" --out "$OUT/ablations_s$s" > "$OUT/ablations_s$s.log" 2>&1 ) &
done
wait
