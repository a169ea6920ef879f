#!/usr/bin/env bash
# Prepares what benchmarks/device_check.py needs on the GPU machine and its image lacks
# (shared/docs/environment.md, "The GPU machine some issues get": Python 3.12; no network there):
#   benchmarks/device_wheels/   Python 3.12 x86-64 wheels of the missing packages (no dependencies resolved:
#                               every missing one is named here), installed there with
#                               pip install --no-index --no-deps --target <tmp>
#   benchmarks/device_data/ml-1m/ratings.dat   the LightGCN part's data (24 MB)
# Both folders are ignored by git; name them in the device call's `carry`. Run from anywhere:
#   bash benchmarks/fetch_device_wheels.sh [path/to/ml-1m]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest="$here/device_wheels"
ml1m="${1:-$here/../../shared/data/ml-1m}"
mkdir -p "$dest" "$here/device_data/ml-1m"
py="${PYTHON:-python3}"

# The versions this project runs here (setup.py ranges), and the dependencies of each that the image lacks.
binary=(
  jraph==0.0.6.dev0
  ml-collections==1.1.0
  gguf==0.19.0
  tensorboardX==2.6.5
  tensorflow-datasets==4.9.10
  array-record==0.8.6
  importlib-resources==7.1.0
  dm-tree==0.1.10
  immutabledict==4.3.1
  simple-parsing==0.1.9
  docstring-parser==0.18.0
  tensorflow-metadata==1.21.0
  googleapis-common-protos==1.76.0
  termcolor==3.3.0
  toml==0.10.2
)
# Published as a source archive only (pure Python): built into a wheel here.
source_only=(promise==2.3)

"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" "${binary[@]}"
"$py" -m pip wheel -q --no-deps -w "$dest" "${source_only[@]}"

if [ -f "$ml1m/ratings.dat" ]; then
  cp -f "$ml1m/ratings.dat" "$here/device_data/ml-1m/ratings.dat"
  chmod u+w "$here/device_data/ml-1m/ratings.dat"
else
  echo "no $ml1m/ratings.dat: the LightGCN part will need --ml1m on the device" >&2
fi
ls -l "$dest"
du -sh "$dest" "$here/device_data"
