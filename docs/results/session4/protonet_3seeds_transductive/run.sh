#!/usr/bin/env bash
# The batch-norm ablation of protonet_3seeds: the same config and seeds with transductive batch norm.
set -u
cd /work/main
OUT=docs/results/session4/protonet_3seeds_transductive
mkdir -p $OUT
for s in 0 1 2; do
  (.venv/bin/metagan train configs/protonet.yaml --out /tmp/metagan-protonet3/protonet_t$s --quiet \
     --set train.seed=$s --set train.threads=1 --set model.batch_norm=transductive \
     > /tmp/metagan-protonet3/train_t$s.txt 2>&1; echo "rc=$?" >> /tmp/metagan-protonet3/train_t$s.txt) &
done
wait
for s in 0 1 2; do
  cp /tmp/metagan-protonet3/protonet_t$s/result.json $OUT/result_seed$s.json
  cp /tmp/metagan-protonet3/protonet_t$s/config.yaml $OUT/config_seed$s.yaml
done
echo done
