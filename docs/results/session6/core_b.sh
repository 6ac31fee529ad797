#!/bin/bash
# Core B: stop FIGR once its 2500-iteration checkpoint (the last within 60 min of loop time) is
# copied, score it, then DAGAN's G after 1200 pre-training updates, then ablation rows.
cd /work/main
until ls -d /work/runs_figr60/ckpt-2500-* >/dev/null 2>&1; do sleep 10; done
sleep 20
until grep -q '"iteration": 2500, "val_' /work/runs_figr60/metrics.jsonl; do sleep 5; done
pkill -f "runs_figr60"; pkill -f ckwatch.sh
ck=$(ls -d /work/runs_figr60/ckpt-2500-*)
.venv/bin/python benchmarks/gan_table.py --seeds 0 --methods --gen-run $ck --episodes 200 --threads 1 --grid --out docs/results/session6/figr_2500 --markdown docs/results/session6/figr_2500/table.md > docs/results/session6/figr_2500.log 2>&1
.venv/bin/python benchmarks/dagan_samples.py --seeds 0 --pretrain-steps 1200 --shots --out docs/results/session6/dagan_pretrain1200 > docs/results/session6/dagan_pretrain1200.log 2>&1
/tmp/ablate_b.sh
