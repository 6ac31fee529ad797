#!/bin/bash
# Session 8's three FIGR checkpoints (configs/fewshot_gan.yaml, 2500 meta-iterations, seeds
# 0-2) scored again by gan_table.py --gen-run after the pooled-GAN baseline's fix (its critic
# read real drawings in [0, 1] beside fakes in [-1, 1], without the gradient penalty), one seed
# after the other, one thread.
set -x
cd /work/main
PY=.venv/bin/python
declare -A RUN=([0]=/work/runs_figr60/ckpt-2500-034938 [1]=/work/runs/figr_seed1 [2]=/work/runs/figr_seed2)
for S in 0 1 2; do
  R=docs/results/session9/figr_rescore_seed$S
  mkdir -p $R
  $PY benchmarks/gan_table.py --seeds $S --methods --gen-run ${RUN[$S]} --episodes 200 --threads 1 \
    --out $R --markdown $R/table.md > $R.log 2>&1
done
echo done > docs/results/session9/figr_rescore.done
