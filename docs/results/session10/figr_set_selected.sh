#!/bin/bash
# Session 9's set-conditioned FIGR runs (gan.condition: set, 1500 meta-iterations, seeds 0-2)
# scored once on meta-test by gan_table.py with one more row per adapted generator: the
# adaptation length selected on meta-val (adapt_sweep.py; STEPS below), beside 0/1/10/50.
# The pooled GAN of each seed comes from the cache (pooled_gan, trained once per seed).
# Usage: figr_set_selected.sh SEED STEPS
set -x
S=${1:?seed}; N=${2:?selected adaptation steps}
cd /work/main
PY=.venv/bin/python
R=docs/results/session10/figr_set_selected_seed$S
mkdir -p $R
$PY benchmarks/gan_table.py --seeds $S --methods --gen-run /work/runs/figr_set_seed$S \
  --adapt-steps 0 1 10 50 $N --episodes 200 --threads 1 $([ $S = 0 ] && echo --grid --grid-steps $N) \
  --out $R --markdown $R/table.md > $R.log 2>&1
echo done > $R/done
