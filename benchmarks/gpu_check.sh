#!/usr/bin/env bash
# The GPU check, one script, < 8 minutes on a single-GPU machine without network:
#   1. the fast test suite with CUDA visible (configs use train.device: auto -> cuda);
#   2. meta-training tasks/s per learner, GPU next to CPU;
#   3. a 4-trial search with resources.gpu = 0.25 (four trials share the GPU), checking that
#      every trial ran on CUDA and that they overlapped.
# Packages the GPU image lacks travel as wheels: see benchmarks/gpu_wheels.sh.
# Results are written under $OUT (the device tool's output folder) when it is set.
set -uo pipefail
cd "$(dirname "$0")/.."
STASH=/tmp/metagan-wheels
OUT=${OUT:-/tmp/metagan-gpu-check}
mkdir -p "$STASH" "$OUT"
for d in .whl-a .whl-b; do [ -d "$d" ] && cp "$d"/* "$STASH"/; done
if [ "${1:-}" = "--stash" ]; then echo "stashed: $(ls "$STASH" | wc -l) files"; exit 0; fi
if ls "$STASH"/*.part-* >/dev/null 2>&1; then
  (cd "$STASH" && for f in $(ls *.part-00 | sed 's/\.part-00$//'); do cat "$f".part-* > "$f"; done)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$STASH"/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(); print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
status=0
echo "== 1. fast tests on CUDA"
timeout 240 python3 -m pytest -q -x -m "not slow" -p no:cacheprovider tests 2>&1 | tee "$OUT/tests.log" | tail -15 || status=1
echo "== 2. meta-training tasks/s, GPU vs CPU"
for dev in cuda cpu; do
  timeout 90 python3 benchmarks/throughput.py --device $dev --iterations 3 2>&1 | tee "$OUT/throughput_$dev.txt" || status=1
done
echo "== 3. 4-trial search, gpu: 0.25 per trial"
timeout 180 python3 -m metagan.cli search search_spaces/demo.yaml --name gpu-check --quiet \
  --storage /tmp/metagan-gpu-results --json "$OUT/gpu_search.json" \
  --set resources.gpu=0.25 --set search.num_samples=4 --set search.max_concurrent=4 \
  --set train.iterations=100 --set scheduler.grace_period=50 2>&1 | tail -8 || status=1
python3 - "$OUT/gpu_search.json" <<'PY' || status=1
import json, sys
from ray.tune import ExperimentAnalysis
r = json.load(open(sys.argv[1]))
frames = ExperimentAnalysis(r["experiment"]).trial_dataframes.values()
spans = [(df["timestamp"].min() - df["time_this_iter_s"].iloc[0], df["timestamp"].max()) for df in frames]
assert len(spans) == 4, spans
assert all((df["cuda"] == 1).all() for df in frames), "a trial did not run on CUDA"
overlap = max(0, min(e for _, e in spans) - max(s for s, _ in spans))
print(f"4 trials on CUDA; all four running together for {overlap:.0f} s")
PY
echo "gpu_check status: $status"
exit $status
