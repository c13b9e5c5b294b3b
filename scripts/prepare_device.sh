#!/usr/bin/env bash
# Prepare the folder that travels to a lent GPU machine (it has no network): the imcsim wheel.
# The GPU image already holds numba, numba-cuda, cupy, h5py, click, scipy, scikit-learn, tqdm,
# matplotlib, pytest and hypothesis.  Run here before a device call; the call then names
# .device in `carry` and runs scripts/device_check.sh (docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .device && mkdir -p .device/wheels
python -m pip wheel --quiet --no-deps -w .device/wheels .
ls -l .device/wheels
