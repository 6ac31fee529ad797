#!/bin/bash
# FIGR (configs/fewshot_gan.yaml) meta-trained for 2500 iterations with training seed S and one
# torch thread (session 6's seed-0 run: the checkpoint at 2500, its last within 60 minutes of
# loop time), then the generation table of that checkpoint on 20 meta-test characters (k = 5),
# as session 6 scored seed 0 (docs/results/session6/figr_2500).
set -x
S=${1:?seed}
cd /work/main
PY=.venv/bin/python
R=docs/results/session8/figr_seed$S
RUN=/work/runs/figr_seed$S
mkdir -p $R
rm -rf $RUN
$PY -m metagan.cli train configs/fewshot_gan.yaml --out $RUN --set train.seed=$S \
  --set train.iterations=2500 --set train.threads=1 --set schedule.eval_every=500 \
  --set schedule.checkpoint_every=500 --set schedule.log_every=50 > $R/train.log 2>&1
cp $RUN/result.json $RUN/config.yaml $RUN/splits.json $RUN/metrics.jsonl $R/
$PY benchmarks/gan_table.py --seeds $S --methods --gen-run $RUN --episodes 200 --threads 1 \
  --out $R/table --markdown $R/table/table.md > $R/table.log 2>&1
echo done > $R/done
