#!/bin/bash
# Keep a copy of every checkpoint the FIGR run writes (metagan train keeps only the last).
run=/work/runs_figr60; seen=""
while kill -0 $(pgrep -f "runs_figr60" | head -1) 2>/dev/null; do
  if [ -d $run/checkpoints/last ]; then
    m=$(stat -c %Y $run/checkpoints/last)
    if [ "$m" != "$seen" ]; then sleep 5; it=$(tail -50 $run/metrics.jsonl | grep -o '"iteration": [0-9]*' | tail -1 | grep -o '[0-9]*'); cp -r $run/checkpoints/last $run/ckpt-$it-$(date +%H%M%S); seen=$m; fi
  fi
  sleep 20
done
