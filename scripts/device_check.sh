#!/usr/bin/env bash
# One prepared run on a lent GPU machine (H100/H200, 16 cores, no network), in about 8 minutes:
#   1. install the imcsim wheel from .device/wheels (the image already has numba, numba-cuda,
#      cupy, pytest, hypothesis, tqdm);
#   2. the CUDA equivalence tests on the real GPU (IMCSIM_TEST_REAL_GPU=1);
#   3. one VGG-lite training step at batch 128 on the GPU (time and emulator share);
#   4. the layer benchmark, GPU and CPU in one run (same machine: ratios are comparable);
#   5. the VGG-lite-on-digits32 comparison of docs/results.md (configs in parallel on the GPU);
#   6. CPU thread scaling of the layer benchmark and the GPU training-engine tests.
# Every step has its own time limit; logs and metrics are packed into $OUT/device.tgz (the device
# tool brings back at most 8 files) and a short summary is printed last.  See docs/gpu.md.
# Prepare here with `bash scripts/prepare_device.sh`, then carry `.device`.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/imcsim-device}
export PY=${PYTHON:-python3}
WORK=/tmp/imcsim-work
TRAIN_EPOCHS=${TRAIN_EPOCHS:-6}
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

# VGG-lite on digits32, seed 0: the configs of docs/results.md's second table, in parallel
train() {  # train NAME ARGS...
    local name=$1; shift
    imcsim train --model vgg-lite --data digits32 --epochs "$TRAIN_EPOCHS" --batch 64 \
        --lr 0.05 --seed 0 --device cuda --quiet --out "$WORK/vgg/$name" "$@" \
        > "$WORK/vgg_$name.log" 2>&1
}
t0=$SECONDS
[ "$TRAIN_LIMIT" -gt 0 ] && timeout "$TRAIN_LIMIT" bash -c "$(declare -f train); WORK=$WORK TRAIN_EPOCHS=$TRAIN_EPOCHS PY=$PY
train a &
train b --imc all &
train c --imc forward,backward --other exact --vref forward=dual:255:2304 --vref backward=dual:255:2304 &
train d --scheme int8 --imc forward,backward --other fp32 --vref forward=fixed:2304 --vref backward=fixed:2304 &
train dm --scheme int8 --imc forward,backward --other fp32 --vref forward=fixed:matched --vref backward=fixed:matched &
train dv --scheme int8 --imc forward,backward --other fp32 &
train d0 --scheme int8 --other exact &   # every MVM exact-quantized (no ADC)
wait"
log "vgg_digits32 training: exit $? in $((SECONDS - t0)) s"
for f in "$WORK"/vgg/*/metrics.json; do
    [ -f "$f" ] && $PY -c "import json,sys; h=json.load(open(sys.argv[1]))['history']; \
print(sys.argv[1].split('/')[-2], [(r['epoch'], round(r['test_acc'], 4), round(r['seconds'], 1), \
round(r.get('backward_high_vref_share', -1), 4)) for r in h])" "$f" >> "$OUT/summary.txt"
done
tail -n 3 "$WORK"/vgg_*.log >> "$OUT/summary.txt"

step bench_threads 75 $PY benchmarks/bench_layers.py --device cpu --batch 16 \
    --layers L2,L4 --repeat 3 --threads 1,4,16 --json "$WORK/bench_threads.json"
step training_gpu_tests 45 $PY -m pytest -q -p no:cacheprovider tests/test_training_xp.py
log "done"
tail -n 80 "$OUT/summary.txt"
