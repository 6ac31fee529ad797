#!/bin/bash
# Core B: the normalisation ablation rows on seed 0, then one ProtoNet-side row.
cd /work/main
.venv/bin/python benchmarks/gan_table.py --updates 600 --seeds 0 --episodes 600 --no-generation --threads 1 --methods \
  --extra "FOMAML, instance norm=FOMAML:model.batch_norm=instance" \
          "FOMAML+DAGAN, instance norm=FOMAML+DAGAN:model.batch_norm=instance" \
          "ProtoNet+DAGAN, 1 fake per real=ProtoNet+DAGAN:gan.augment=1" \
  --out docs/results/session6/ablations_b > docs/results/session6/ablations_b.log 2>&1
