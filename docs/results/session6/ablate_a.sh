#!/bin/bash
# Core A: after the DAGAN sample run, the FOMAML-side ablation rows on seed 0.
cd /work/main
while pgrep -f "after_seed1.sh" >/dev/null; do sleep 10; done
.venv/bin/python benchmarks/gan_table.py --updates 600 --seeds 0 --episodes 600 --no-generation --threads 1 --methods \
  --extra "FOMAML+DAGAN, fakes at meta-train only=FOMAML+DAGAN:gan.augment_at_test=false" \
          "FOMAML+DAGAN, fake weight 0.25=FOMAML+DAGAN:gan.fake_weight=0.25" \
          "FOMAML+DAGAN, 1 fake per real=FOMAML+DAGAN:gan.augment=1" \
          "MetaGAN, fake weight 0=MetaGAN:gan.fake_weight=0" \
          "MetaGAN, instance norm=MetaGAN:model.batch_norm=instance" \
  --out docs/results/session6/ablations_a > docs/results/session6/ablations_a.log 2>&1
