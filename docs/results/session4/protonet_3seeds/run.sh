#!/usr/bin/env bash
# ProtoNet (configs/protonet.yaml) under the current protocol, 3 training seeds in parallel,
# one torch thread each (2 cores), then meta-test once per run: the standard 5-way 1-shot
# (non-transductive, in result.json), per alphabet, and 20-way within-alphabet one-shot.
set -u
cd /work/main
OUT=docs/results/session4/protonet_3seeds
mkdir -p $OUT
for s in 0 1 2; do
  (.venv/bin/metagan train configs/protonet.yaml --out /tmp/metagan-protonet3/protonet_s$s --quiet \
     --set train.seed=$s --set train.threads=1 > /tmp/metagan-protonet3/train_s$s.txt 2>&1; echo "rc=$?" >> /tmp/metagan-protonet3/train_s$s.txt) &
done
wait
for s in 0 1 2; do
  cp /tmp/metagan-protonet3/protonet_s$s/result.json $OUT/result_seed$s.json
  cp /tmp/metagan-protonet3/protonet_s$s/config.yaml $OUT/config_seed$s.yaml
  cp /tmp/metagan-protonet3/protonet_s$s/splits.json $OUT/splits_seed$s.json
  .venv/bin/metagan evaluate /tmp/metagan-protonet3/protonet_s$s --split test --within-alphabet --episodes 200 \
     > $OUT/within_alphabet_seed$s.json 2>&1
done
echo done
