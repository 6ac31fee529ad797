#!/bin/bash
# Session 7, after the three protonet.yaml searches (run from /work/main's code by
# `benchmarks/search_vs_base.py search_spaces/protonet.yaml --budget-s 1800 --seeds 0 1 2
#  --out /work/searches/protonet`): keep their files, re-score each search's top trials on
# meta-val (search.confirm_top, after the fact), then throughput and MAML 20-way. One at a time.
set -x
cd /work/dev
PY="env PYTHONPATH=/work/dev /work/main/.venv/bin/python"
R=docs/results/session7
while pgrep -f "search_vs_base.py search_spaces/protonet.yaml" >/dev/null; do sleep 10; done
mkdir -p $R/svb_protonet
cp /work/searches/protonet/summary.json $R/svb_protonet/summary_search_pick.json
cp /work/searches/protonet/storage/*.json $R/svb_protonet/
cp /work/searches/protonet.log $R/svb_protonet/search_vs_base.log
cp /work/searches/protonet/base-protonet/result.json $R/svb_protonet/base_result.json
cp /work/searches/protonet/base-protonet/config.yaml $R/svb_protonet/base_config.yaml
$PY benchmarks/search_vs_base.py search_spaces/protonet.yaml --budget-s 1800 --seeds 0 1 2 \
  --out /work/searches/protonet --confirm-top 4 --confirm-episodes 1000 > $R/svb_protonet/confirmed.txt 2>&1
cp /work/searches/protonet/summary.json $R/svb_protonet/summary.json
cp /work/searches/protonet/test_evaluations.json $R/svb_protonet/
for s in 0 1 2; do cp /work/searches/protonet/storage/svb-protonet-seed$s/confirmed.json $R/svb_protonet/confirmed_seed$s.json; done
$PY benchmarks/throughput.py > $R/throughput.txt 2>&1
$PY benchmarks/throughput.py --queries 15 --learners maml fomaml > $R/throughput_15q.txt 2>&1
echo done > $R/after_searches.done
