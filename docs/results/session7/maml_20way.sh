#!/bin/bash
# configs/maml_20way.yaml (the MAML paper's 20-way 1-shot settings), shortened to N
# meta-iterations by what the session could afford, then Lake et al.'s 20-way within-alphabet
# one-shot task on the meta-test alphabets (200 tasks per alphabet). Seed 0.
set -x
N=${1:-600}
cd /work/dev
PY="env PYTHONPATH=/work/dev /work/main/.venv/bin/python"
R=docs/results/session7/maml_20way
mkdir -p $R
rm -rf /work/runs/maml20
$PY -m metagan.cli train configs/maml_20way.yaml --out /work/runs/maml20 \
  --set train.iterations=$N --set schedule.eval_every=$((N / 2)) \
  --set schedule.checkpoint_every=$((N / 2)) --set schedule.log_every=20 > $R/train.log 2>&1
cp /work/runs/maml20/result.json /work/runs/maml20/config.yaml /work/runs/maml20/splits.json \
   /work/runs/maml20/metrics.jsonl $R/
$PY -m metagan.cli evaluate /work/runs/maml20 --split test --within-alphabet --episodes 200 \
  > $R/within_alphabet.json 2> $R/within_alphabet.err
echo done > $R/done
