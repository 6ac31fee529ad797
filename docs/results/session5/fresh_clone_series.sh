#!/usr/bin/env bash
# Five fresh-clone CI runs of one commit: run 1 right after local_cluster start+stop,
# runs 2-3 idle, runs 4-5 beside a 2-thread torch matmul hog.
set -u
SRC=/work/main
COMMIT=$(git -C $SRC rev-parse HEAD)
OUTD=/tmp/series
SUM=$OUTD/summary.txt
echo "commit $COMMIT  started $(date -u +%FT%TZ)" > $SUM
hog_start() {
  nohup $SRC/.venv/bin/python -c '
import torch, time
torch.set_num_threads(2)
a = torch.randn(1024, 1024)
while True:
    a = torch.tanh(a @ a / 32)
' > $OUTD/hog.log 2>&1 &
  echo $! > $OUTD/hog.pid
}
hog_stop() { [ -f $OUTD/hog.pid ] && kill $(cat $OUTD/hog.pid) 2>/dev/null; rm -f $OUTD/hog.pid; }
for i in 1 2 3 4 5; do
  D=$OUTD/clone$i; rm -rf $D
  git clone -q $SRC $D && git -C $D checkout -q $COMMIT
  label=idle
  if [ $i = 1 ]; then
    (cd $SRC && cluster/local_cluster.sh start >$OUTD/lc_start.log 2>&1; echo "start rc=$?" >> $SUM; cluster/local_cluster.sh stop >$OUTD/lc_stop.log 2>&1; echo "stop rc=$?" >> $SUM)
    label=after-local-cluster
  fi
  if [ $i -ge 4 ]; then hog_start; label=beside-hog; fi
  t0=$(date +%s)
  (cd $D && CI=true bash .ci/run) > $OUTD/run$i.txt 2>&1
  rc=$?
  t1=$(date +%s)
  hog_stop
  echo "run $i ($label): rc=$rc wall=$((t1-t0))s  $(grep -E '[0-9]+ passed' $OUTD/run$i.txt | tail -1)  ended $(date -u +%FT%TZ)" >> $SUM
  [ $rc = 0 ] || { echo "series stopped at run $i" >> $SUM; break; }
done
echo done >> $SUM
