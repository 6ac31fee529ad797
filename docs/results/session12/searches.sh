#!/bin/bash
# The two GAN spaces' searches, one after the other, each with 900 s of search budget at 600
# meta-learner updates (the gan_table's length), one search seed, the 3 best trials re-scored
# on 600 meta-val tasks; base config trained and tested on the same 600 meta-test episodes.
cd /work/main
R=docs/results/session12
for s in dagan metagan; do
  .venv/bin/python benchmarks/search_vs_base.py search_spaces/$s.yaml --budget-s 900 --seeds 0 \
    --set train.iterations=600 --confirm-top 3 --confirm-episodes 600 \
    --out /work/searches12/$s > $R/search_vs_base_$s.txt 2>&1
  cp /work/searches12/$s/summary.json $R/search_vs_base_$s.json
  cp /work/searches12/$s/storage/*.json $R/ 2>/dev/null
done
