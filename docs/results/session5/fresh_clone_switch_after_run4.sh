#!/bin/bash
# After run 4: stop the series script (and the run 5 it starts on a685512); run 5 becomes a
# fresh clone of the session's final code commit e9f60b78204da1ef219b15d2afc588d4cd842b8b, beside the gan_table processes.
while ! grep -q '^run 4' /tmp/series/summary.txt; do sleep 1; done
kill -- -2005 2>/dev/null
sleep 2
pkill -f "/tmp/series/clone5" 2>/dev/null
echo "series script stopped after run 4 at $(date -u +%FT%TZ); run 5 = fresh clone of e9f60b78204da1ef219b15d2afc588d4cd842b8b" >> /tmp/series/summary.txt
D=/tmp/series/clone5final; rm -rf $D
git clone -q /work/main $D && git -C $D checkout -q e9f60b78204da1ef219b15d2afc588d4cd842b8b
t0=$(date +%s)
(cd $D && CI=true bash .ci/run) > /tmp/series/run5_final.txt 2>&1
rc=$?
t1=$(date +%s)
echo "run 5 (final code commit e9f60b78204da1ef219b15d2afc588d4cd842b8b, beside gan_table processes): rc=$rc wall=$((t1-t0))s  $(grep -E '[0-9]+ passed' /tmp/series/run5_final.txt | tail -1)  ended $(date -u +%FT%TZ)" >> /tmp/series/summary.txt
echo done >> /tmp/series/summary.txt
