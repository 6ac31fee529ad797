#!/bin/bash
# FIGR (configs/fewshot_gan.yaml) with G also conditioned on a code of the task's drawings
# (gan.condition: set), otherwise session 8's figr_seed.sh: 2500 iterations, one torch thread,
# a meta-val evaluation every 500 (ITERS=N: N iterations instead), then the generation table
# of the final checkpoint on 20
# meta-test characters (k = 5).
set -x
S=${1:?seed}
cd /work/main
PY=.venv/bin/python
R=docs/results/session9/figr_set_seed$S
RUN=/work/runs/figr_set_seed$S
mkdir -p $R
rm -rf $RUN
$PY -m metagan.cli train configs/fewshot_gan.yaml --out $RUN --set train.seed=$S \
  --set gan.condition=set \
  --set train.iterations=${ITERS:-2500} --set train.threads=1 --set schedule.eval_every=500 \
  --set schedule.checkpoint_every=500 --set schedule.log_every=50 > $R/train.log 2>&1
cp $RUN/result.json $RUN/config.yaml $RUN/splits.json $RUN/metrics.jsonl $R/
$PY benchmarks/gan_table.py --seeds $S --methods --gen-run $RUN --episodes 200 --threads 1 \
  --out $R/table --markdown $R/table/table.md > $R/table.log 2>&1
echo done > $R/done
