#!/bin/bash
# MetaGAN's generator in the generation table: gan_table.py trains the MetaGAN row (600
# meta-learner updates, configs/metagan.yaml) and scores its G beside FIGR as shipped (the
# seed's 2500-iteration checkpoint), DAGAN's G and the baselines, on the same 20 meta-test
# characters. Usage: metagan_g.sh SEED
set -x
S=${1:?seed}
cd /work/main
PY=.venv/bin/python
declare -A RUN=([0]=/work/runs_figr60/ckpt-2500-034938 [1]=/work/runs/figr_seed1 [2]=/work/runs/figr_seed2)
R=docs/results/session10/metagan_g_seed$S
mkdir -p $R
$PY benchmarks/gan_table.py --seeds $S --methods MetaGAN --gen-run ${RUN[$S]} --episodes 200 \
  --threads 1 --out $R --markdown $R/table.md > $R.log 2>&1
echo done > $R/done
