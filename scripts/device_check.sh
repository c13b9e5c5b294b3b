#!/usr/bin/env bash
# One prepared run on a lent GPU machine (H100/H200, 16 cores, no network), in about 8 minutes:
#   1. install the imcsim wheel from .device/wheels (the image already has numba, numba-cuda,
#      cupy, pytest, hypothesis, tqdm);
#   2. the CUDA equivalence tests on the real GPU (IMCSIM_TEST_REAL_GPU=1);
#   3. one VGG-lite training step at batch 128 on the GPU (time and emulator share);
#   4. the layer benchmark, GPU and CPU in one run (same machine: ratios are comparable);
#   5. Table III's ten configs for one seed (TABLE3_SEED, default 1), in parallel on the GPU;
#   6. CPU thread scaling of the layer benchmark and the GPU training-engine tests.
# Every step has its own time limit; logs and metrics are packed into $OUT/device.tgz (the device
# tool brings back at most 8 files) and a short summary is printed last.  See docs/gpu.md.
# Prepare here with `bash scripts/prepare_device.sh`, then carry `.device`.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/imcsim-device}
export PY=${PYTHON:-python3}
WORK=/tmp/imcsim-work
TRAIN_EPOCHS=${TRAIN_EPOCHS:-4}      # Table III's schedule (scripts/table3.sweep.json)
TRAIN_LIMIT=${TRAIN_LIMIT:-200}
mkdir -p "$OUT" "$WORK"
# PYTHONSAFEPATH: `python -m ...` must not put the working tree first on sys.path, where its
# imcsim/ (without the kernels/ and training/ folders the wheel maps in) would shadow the wheel
export PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1 NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
SKIP=${SKIP:-}     # names of steps to leave out, e.g. SKIP="bench_threads training_gpu_tests"
step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep its log, note its status
    local name=$1 limit=$2; shift 2
    case " $SKIP " in *" $name "*) log "$name: skipped"; return;; esac
    local t0=$SECONDS
    timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    log "$name: exit $rc in $((SECONDS - t0)) s"
    tail -n 30 "$WORK/$name.log" >> "$OUT/summary.txt"
}
# checkpoints stay behind: the device tool brings back at most 16 MiB per file
pack() {
         tar czf "$OUT/device.tgz" --exclude='*.npz' -C "$WORK" . ; }
trap pack EXIT
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; uname -r;
  grep -m1 "model name" /proc/cpuinfo; grep -o -m1 avx512_vpopcntdq /proc/cpuinfo;
  $PY - <<'PY'
import numpy, numba
print("python", __import__("sys").version.split()[0], "numpy", numpy.__version__, "numba", numba.__version__)
for name in ("numba_cuda", "cupy"):
    try:
        mod = __import__(name)
        print(name, getattr(mod, "__version__", "?"))
    except Exception as exc:
        print(name, "not importable:", type(exc).__name__, exc)
PY
} > "$WORK/machine.txt" 2>&1
cat "$WORK/machine.txt" >> "$OUT/summary.txt"
step install 60 $PY -m pip install --no-index --no-deps --no-compile .device/wheels/imcsim-*.whl
# the installed wheel, not the working tree, must be what runs (and imports imcsim.kernels)
export IMCSIM_TEST_REAL_GPU=1 IMCSIM_CUDA_EXAMPLES=${IMCSIM_CUDA_EXAMPLES:-30}
step cuda_tests 150 $PY -m pytest -q -p no:cacheprovider -x tests/test_cuda.py tests/test_multilevel.py -m cuda
step vgg_step_gpu 75 $PY scripts/time_vgg_step.py --device cuda --steps 3
step bench_layers 90 $PY benchmarks/bench_layers.py --device cuda,cpu --batch 32 \
    --layers L2,L4,L6,L7 --repeat 3 --json "$WORK/bench_layers.json"
step bench_layers_resident 60 $PY benchmarks/bench_layers.py --device cuda --resident \
    --batch 128 --layers L2,L4,L7 --repeat 3 --json "$WORK/bench_layers_resident.json"

# Table III at the paper's layer sizes (scripts/table3.sweep.json, docs/results-table3.md):
# every config of one seed in parallel on the GPU, the sweep's own parameters plus
# --device cuda (a GPU run's FP32 layers round differently from the CPU's: its rows are
# reported beside the CPU sweep's, not merged into it)
train() {  # train NAME ARGS...
    local name=$1; shift
    imcsim train --model vgg-lite --data digits32 --epochs "$TRAIN_EPOCHS" --batch 64 \
        --lr 0.05 --seed "$TABLE3_SEED" --device cuda --quiet --out "$WORK/vgg/$name" "$@" \
        > "$WORK/vgg_$name.log" 2>&1
}
TABLE3_SEED=${TABLE3_SEED:-1}
t0=$SECONDS
[ "$TRAIN_LIMIT" -gt 0 ] && timeout "$TRAIN_LIMIT" bash -c "$(declare -f train); WORK=$WORK TRAIN_EPOCHS=$TRAIN_EPOCHS PY=$PY TABLE3_SEED=$TABLE3_SEED
train fp32 &
train exact --other exact &
for law in floor half_up; do
    train all-\$law --imc all --adc-rounding \$law &
    train fwd-\$law --imc forward --adc-rounding \$law &
    train bwd-\$law --imc backward --adc-rounding \$law &
    train upd-\$law --imc update --adc-rounding \$law &
done
wait"
log "table3 (seed $TABLE3_SEED) training: exit $? in $((SECONDS - t0)) s"
for f in "$WORK"/vgg/*/metrics.json; do
    [ -f "$f" ] && $PY -c "import json,sys; h=json.load(open(sys.argv[1]))['history']; \
print(sys.argv[1].split('/')[-2], [(r['epoch'], round(r['test_acc'], 4), round(r['seconds'], 1)) \
for r in h])" "$f" >> "$OUT/summary.txt"
done
tail -n 3 "$WORK"/vgg_*.log >> "$OUT/summary.txt"

step bench_threads 75 $PY benchmarks/bench_layers.py --device cpu --batch 16 \
    --layers L2,L4 --repeat 3 --threads 1,4,16 --json "$WORK/bench_threads.json"
step training_gpu_tests 45 $PY -m pytest -q -p no:cacheprovider tests/test_training_xp.py
log "done"
tail -n 80 "$OUT/summary.txt"
