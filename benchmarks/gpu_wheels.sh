#!/usr/bin/env bash
# Run HERE (with network to PyPI) before benchmarks/gpu_check.sh goes to a GPU machine.
# The GPU image has Python 3.12 and torch but not Ray, HyperOpt or boto3: this downloads
# their cp312 wheels (no dependencies beyond what the image lacks) into two folders that
# `.git/info/exclude` ignores. Ray's wheel alone is ~79 MB, over the 64 MiB a device call may
# carry, so every file goes, split if need be, into .whl-a/ or .whl-b/ (each < 60 MiB):
#   call 1: carry [".whl-a"], command: bash benchmarks/gpu_check.sh --stash
#   call 2 (machine still warm): carry [".whl-b"], command: bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl-\*/' .git/info/exclude 2>/dev/null || echo '/.whl-*/' >> .git/info/exclude
rm -rf .whl-a .whl-b .whl-all && mkdir -p .whl-a .whl-b .whl-all
# The versions tested here (constraints.txt), for the GPU image's Python 3.12.
pins=()
for name in ray hyperopt py4j future jsonschema jsonschema-specifications referencing rpds-py \
            boto3 botocore s3transfer jmespath tensorboardX; do
  pin=$(grep -i "^${name}==" constraints.txt || true)
  pins+=("${pin:-$name}")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl-all "${pins[@]}"
# Split everything into 20 MiB pieces and deal them into the two folders by size.
(cd .whl-all && for f in *.whl; do split -b 20M -d "$f" "$f.part-"; rm "$f"; done)
size_a=0
for f in .whl-all/*; do
  s=$(stat -c %s "$f")
  if [ $((size_a + s)) -lt $((60 * 1024 * 1024)) ]; then mv "$f" .whl-a/; size_a=$((size_a + s)); else mv "$f" .whl-b/; fi
done
rmdir .whl-all
du -sh .whl-a .whl-b
