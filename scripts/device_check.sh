#!/usr/bin/env bash
# One prepared run on a lent GPU machine (H100/H200), in under 5 minutes: install, the CUDA
# equivalence tests on the real GPU, the layer benchmark (GPU at batch 128, CPU at batch 16
# with thread scaling), the fast-path benchmark and one VGG-lite training step per device.
# Everything is logged under $OUT; a short table is printed last.  See docs/gpu.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/imcsim-device}
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep its log, note its status
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    log "$name: exit $rc in $((SECONDS - t0)) s"
    tail -n 25 "$OUT/$name.log" >> "$OUT/summary.txt"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc;
  python - <<'PY'
import numpy, numba
print("python", __import__("sys").version.split()[0], "numpy", numpy.__version__, "numba", numba.__version__)
for name in ("numba_cuda", "cupy"):
    try:
        mod = __import__(name)
        print(name, getattr(mod, "__version__", "?"))
    except Exception as exc:
        print(name, "not importable:", type(exc).__name__, exc)
PY
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt" >> "$OUT/summary.txt"
step install 120 python -m pip install --no-index --find-links .device/wheels --no-deps \
    .device/wheels/imcsim-*.whl pytest pluggy iniconfig packaging hypothesis attrs \
    sortedcontainers threadpoolctl tqdm
# the installed wheel, not the working tree, must be what runs (and imports imcsim.kernels)
export IMCSIM_TEST_REAL_GPU=1 IMCSIM_CUDA_EXAMPLES=${IMCSIM_CUDA_EXAMPLES:-30}
step cuda_tests 120 python -m pytest -q -p no:cacheprovider -x tests/test_cuda.py
step training_gpu_tests 60 python -m pytest -q -p no:cacheprovider tests/test_training_xp.py
step bench_layers_gpu 90 python benchmarks/bench_layers.py --device cuda --batch 128 \
    --layers L2,L4,L6,L7,L8 --repeat 5 --json "$OUT/bench_layers_gpu.json"
step bench_layers_cpu 90 python benchmarks/bench_layers.py --device cpu --batch 16 \
    --layers L2,L4,L7 --repeat 3 --threads 1,2,4,8,16 --json "$OUT/bench_layers_cpu.json"
step vgg_step_gpu 90 python scripts/time_vgg_step.py --device cuda --steps 3
step bench_fast_path 60 python benchmarks/bench_fast_path.py --repeat 20
log "done; logs in $OUT"
tail -n 60 "$OUT/summary.txt"
