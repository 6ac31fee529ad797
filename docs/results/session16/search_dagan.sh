#!/bin/bash
# The DAGAN space searched again after it gained gan.class_weight and gan.diversity_weight:
# session 12's protocol (docs/results/session12/searches.sh): 900 s of search budget at 600
# meta-learner updates, search seed 0, the 3 best trials re-scored on 600 meta-val tasks. The
# base config's run is session 12's (the same config and code path: the new keys are off in it),
# copied in and scored again on the same 600 meta-test episodes.
set -e
cd /work/main
OUT=/work/searches16/dagan
mkdir -p $OUT
[ -d $OUT/base-dagan ] || cp -r /work/searches12/dagan/base-dagan $OUT/
.venv/bin/python benchmarks/search_vs_base.py search_spaces/dagan.yaml --budget-s 900 --seeds 0 \
  --set train.iterations=600 --confirm-top 3 --confirm-episodes 600 \
  --out $OUT > docs/results/session16/search_vs_base_dagan.txt 2>&1
cp $OUT/summary.json docs/results/session16/search_vs_base_dagan.json
# Added in session 17: the search's own summary (every trial's parameters) and the meta-test
# evaluations, copied next to the table.
cp $OUT/storage/svb-dagan-seed0.json docs/results/session16/svb-dagan-seed0.json
cp $OUT/test_evaluations.json docs/results/session16/search_dagan_test_evaluations.json
