#!/bin/bash
# After both ablation processes: the three GAN spaces' searches, one at a time, alone.
cd /work/main
while pgrep -f "ablate_a.sh|ablate_b.sh|core_b.sh" >/dev/null; do sleep 10; done
R=docs/results/session6
for s in dagan metagan; do
  .venv/bin/python benchmarks/search_vs_base.py search_spaces/$s.yaml --budget-s 480 --seeds 0 \
    --set train.iterations=600 --out /work/searches/$s > $R/search_vs_base_$s.txt 2>&1
  cp /work/searches/$s/summary.json $R/search_vs_base_$s.json
  cp /work/searches/$s/storage/*.json $R/ 2>/dev/null
done
.venv/bin/metagan search search_spaces/fewshot_gan.yaml --name figr-search --storage /work/searches/figr \
  --set train.iterations=400 --set search.time_budget_s=480 --quiet --json $R/search_fewshot_gan.json > $R/search_fewshot_gan.txt 2>&1
best=$(python3 -c "import json; print(json.load(open('$R/search_fewshot_gan.json'))['best_checkpoint'])")
.venv/bin/metagan evaluate "$best" --split test --episodes 20 > $R/search_fewshot_gan_test.txt 2>&1
