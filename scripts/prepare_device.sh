#!/usr/bin/env bash
# Prepare the folder that travels to a lent GPU machine (it has no network): the imcsim wheel
# and the pure-Python test dependencies the GPU image lacks.  Run here before a device call;
# the call then names .device in `carry` and runs scripts/device_check.sh (docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .device && mkdir -p .device/wheels
python -m pip wheel --quiet --no-deps -w .device/wheels .
python -m pip download --quiet --only-binary=:all: --no-deps -d .device/wheels \
    pytest pluggy iniconfig packaging hypothesis attrs sortedcontainers exceptiongroup tomli \
    threadpoolctl tqdm
# compiled wheels (hypothesis, tomli) for every Python the GPU image may have
for py in 3.10 3.11 3.12 3.13; do
    python -m pip download --quiet --only-binary=:all: --no-deps --python-version "$py" \
        --implementation cp -d .device/wheels hypothesis tomli || true
done
ls .device/wheels
