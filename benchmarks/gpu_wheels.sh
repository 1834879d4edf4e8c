#!/bin/bash
# Fetches, on this (CPU) machine, the Python 3.12 wheels that benchmarks/gpu_check.sh installs on a
# lent device machine: the packages of requirements.txt (and their dependencies) that its image
# lacks (/work/.library/device/KINDS.md lists what it has: JAX with CUDA, but not grain, TFDS or
# ml_collections), plus flax, optax and orbax at our pins, so that only JAX's version differs
# there, and protobuf at ours (tensorflow-metadata's generated code needs a runtime at least as
# new). 14 MiB, into .whl/ (ignored by git: `echo /.whl/ >> .git/info/exclude`).
set -eu -o pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/python -m pip}
mkdir -p .whl
$PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  ml-collections==1.1.0 array-record==0.8.6 grain==0.2.18 tensorflow-datasets==4.9.10 \
  tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 dm-tree==0.1.10 \
  simple-parsing==0.1.9 docstring-parser==0.18.0 immutabledict==4.3.1 portpicker==1.6.0 \
  toml==0.10.2 termcolor==3.3.0 flax==0.12.8 optax==0.2.8 orbax-checkpoint==0.12.8 \
  protobuf==7.36.2
$PIP wheel -q --no-deps -w .whl promise==2.3  # An sdist only: built here (pure Python).
ls .whl
