#!/bin/bash
# Runs 4-5: the CPU-bound load beside CI is the two gan_table processes; the matmul hog goes.
while true; do
  if [ -f /tmp/series/hog.pid ]; then
    p=$(cat /tmp/series/hog.pid)
    if kill -0 $p 2>/dev/null; then kill $p && echo "killed hog $p at $(date -u +%FT%TZ)" >> /tmp/series/hogkiller.log; fi
  fi
  grep -q '^done' /tmp/series/summary.txt 2>/dev/null && break
  sleep 3
done
