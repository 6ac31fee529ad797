#!/bin/bash
# FIGR as shipped (configs/fewshot_gan.yaml, gan.condition: weights; session 6's seed-0 run and
# session 8's seeds 1-2, 2500 meta-iterations each) scored once on meta-test by gan_table.py
# with one more row per adapted generator: the adaptation length selected on meta-val
# (select_steps.py), beside 0/1/10/50. The pooled GAN of each seed comes from the cache.
# Usage: figr_weights_selected.sh SEED STEPS
set -x
S=${1:?seed}; N=${2:?selected adaptation steps}
cd /work/main
PY=.venv/bin/python
declare -A RUN=([0]=/work/runs_figr60/ckpt-2500-034938 [1]=/work/runs/figr_seed1 [2]=/work/runs/figr_seed2)
R=docs/results/session10/figr_weights_selected_seed$S
mkdir -p $R
$PY benchmarks/gan_table.py --seeds $S --methods --gen-run ${RUN[$S]} \
  --adapt-steps 0 1 10 50 $N --episodes 200 --threads 1 $([ $S = 0 ] && echo --grid --grid-steps $N) \
  --out $R --markdown $R/table.md > $R.log 2>&1
echo done > $R/done
