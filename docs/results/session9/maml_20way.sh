#!/bin/bash
# configs/maml_20way.yaml as shipped (400 meta-iterations; session 7's seed-0 run used the same
# settings by --set), training seed S, one torch thread, then Lake et al.'s 20-way
# within-alphabet one-shot task on the meta-test alphabets (200 tasks per alphabet).
set -x
S=${1:?seed}
cd /work/main
PY=.venv/bin/python
R=docs/results/session9/maml_20way_seed$S
RUN=/work/runs/maml20_seed$S
mkdir -p $R
rm -rf $RUN
$PY -m metagan.cli train configs/maml_20way.yaml --out $RUN --set train.seed=$S \
  --set train.threads=1 > $R/train.log 2>&1
cp $RUN/result.json $RUN/config.yaml $RUN/splits.json $RUN/metrics.jsonl $R/
OMP_NUM_THREADS=1 $PY -m metagan.cli evaluate $RUN --split test --within-alphabet --episodes 200 \
  > $R/within_alphabet.json 2> $R/within_alphabet.err
echo done > $R/done
