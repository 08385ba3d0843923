#!/usr/bin/env bash
# Downloads the wheels that bench/gpu_reproduce.sh installs on a GPU machine without network.
#
#   bash bench/fetch_gpu_wheels.sh            # run in the repository root, with network (PyPI)
#
# Target: CPython 3.12 on manylinux x86_64, whose image already holds jax, flax, optax,
# orbax-checkpoint, chex, numpy, pillow, absl-py, pyyaml, protobuf, etils, attrs, wrapt, psutil,
# pyarrow, requests, tqdm, einops, six, fsspec, zipp, typing-extensions and packaging.
# Missing there, and fetched here (the versions this project is tested with):
#   .whl/           tensorflow-datasets and its missing requirements, ml-collections,
#                   array-record, tensorboardX, grain (+ cloudpickle, portpicker); installed with --no-deps into /tmp/site
#   .whl/fallback/  protobuf and etils: used only when the machine's own are too old for
#                   tensorflow-metadata's generated code / tensorflow-datasets
# promise has no wheel on PyPI (sdist only, pure Python): its wheel is built here.
# .whl/ is git-ignored; name it in the device tool's `carry` (with .data/).
set -euo pipefail

DEST=${1:-.whl}
PY=${PYTHON:-python3}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64)
TARGET=(--python-version 3.12 --implementation cp --only-binary=:all: --no-deps
        "${PLATFORMS[@]}")

MAIN=(
  tensorflow-datasets==4.9.10
  ml-collections==1.1.0
  array-record==0.8.6
  tensorboardX==2.6.5
  dm-tree==0.1.10
  immutabledict==4.3.1
  simple-parsing==0.1.9
  docstring-parser==0.18.0
  tensorflow-metadata==1.21.0
  googleapis-common-protos==1.76.0
  termcolor==3.3.0
  toml==0.10.2
  grain==0.2.18
  cloudpickle==3.1.3
  portpicker==1.6.0
)
FALLBACK=(protobuf==7.36.2 etils==1.15.0)

mkdir -p "$DEST/fallback"
for req in "${MAIN[@]}"; do
  "$PY" -m pip download -q "${TARGET[@]}" -d "$DEST" "$req"
done
for req in "${FALLBACK[@]}"; do
  "$PY" -m pip download -q "${TARGET[@]}" -d "$DEST/fallback" "$req"
done
"$PY" -m pip wheel -q --no-deps --no-binary=promise -w "$DEST" promise==2.3

ls -l "$DEST" "$DEST/fallback"
du -sh "$DEST"
