#!/usr/bin/env bash
# One prepared run on a lent GPU machine (H100/H200, 16 cores, no network), in about 7 minutes:
#   1. install the imcsim wheel from .device/wheels (the image already has numba, numba-cuda,
#      cupy, pytest, hypothesis, tqdm);
#   2. in the background, Table III's ten configs (scripts/table3.sweep.json) in parallel on the
#      GPU, one seed after another (TABLE3_SEEDS, default 1) while TABLE3_DEADLINE allows;
#   3. meanwhile the CUDA equivalence tests on the real GPU (IMCSIM_TEST_REAL_GPU=1) and the
#      GPU training-engine tests;
#   4. noise budgets of VGG-lite at the paper's sizes (BUDGET_MAPPINGS x BUDGET_PLACEMENTS,
#      issue 20);
#   5. then, on a quiet machine: one VGG-lite training step at batch 128 on the GPU (with the
#      popcount and with the GEMM count path, IMCSIM_CUDA_COUNT_PATH=gemm), the layer
#      benchmark (GPU and CPU in one run, and with GPU-resident operands) and the CPU thread
#      scaling.
# Every step has its own time limit and can be left out (SKIP="table3 bench_threads ...");
# logs and metrics are packed into $OUT/device.tgz (the device tool brings back at most 8 files)
# and a short summary is printed last.  See docs/gpu.md.
# Prepare here with `bash scripts/prepare_device.sh`, then carry `.device`.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/imcsim-device}
export PY=${PYTHON:-python3}
WORK=/tmp/imcsim-work
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
# Table III at the paper's layer sizes (scripts/table3.sweep.json, docs/results-table3.md):
# every config of one seed in parallel on the GPU, seed after seed (TABLE3_SEEDS), each wave
# started only while the time left before TABLE3_DEADLINE (seconds from this script's start)
# covers the last wave's time plus a fifth.  The argument lists come from the sweep file
# (scripts/sweep_commands.py) plus --device cuda: a GPU run's FP32 layers round differently
# from the CPU's, so its rows are reported beside the CPU sweep's, not merged into it.
# The waves run in the background while the GPU tests run.
TABLE3_SEEDS=${TABLE3_SEEDS:-1}
TABLE3_DEADLINE=${TABLE3_DEADLINE:-420}
TABLE3_DEVICE=${TABLE3_DEVICE:-cuda}
TABLE3_SET=${TABLE3_SET:-}          # extra KEY=VALUE overrides, e.g. "epochs=1 max_steps=2"
table3() {
    local last=0 seed name args left t0 sets=(--set "device=$TABLE3_DEVICE" --set quiet=true)
    for kv in $TABLE3_SET; do sets+=(--set "$kv"); done
    mkdir -p "$WORK/vgg"
    for seed in $TABLE3_SEEDS; do
        left=$((TABLE3_DEADLINE - SECONDS))
        if [ "$left" -lt $((last + last / 5)) ] || [ "$left" -lt 60 ]; then
            log "table3 seed $seed: not started ($left s left, the last wave took $last s)"
            continue
        fi
        t0=$SECONDS
        while IFS=$'\t' read -r name args; do
            eval "timeout $left imcsim train $args --out '$WORK/vgg/$name'" \
                > "$WORK/vgg_$name.log" 2>&1 &
        done < <($PY scripts/sweep_commands.py scripts/table3.sweep.json "$seed" "${sets[@]}")
        wait
        last=$((SECONDS - t0))
        log "table3 seed $seed: $last s"
    done
}
case " $SKIP " in
    *" table3 "*) log "table3: skipped" ;;
    *) table3 & TABLE3_PID=$! ;;
esac
step cuda_tests 150 $PY -m pytest -q -p no:cacheprovider -x tests/test_cuda.py tests/test_multilevel.py -m cuda
step training_gpu_tests 60 $PY -m pytest -q -p no:cacheprovider tests/test_training_xp.py
[ -n "${TABLE3_PID:-}" ] && wait "$TABLE3_PID"
for f in "$WORK"/vgg/*/metrics.json; do
    [ -f "$f" ] && $PY -c "import json,sys; h=json.load(open(sys.argv[1]))['history']; \
print(sys.argv[1].split('/')[-2], [(r['epoch'], round(r['test_acc'], 4), round(r['seconds'], 1)) \
for r in h])" "$f" >> "$OUT/summary.txt"
done
tail -q -n 1 "$WORK"/vgg_*.log >> "$OUT/summary.txt" 2>/dev/null
# Noise budgets at the paper's layer sizes (issue 20): VGG-lite on digits32, all three MVMs on
# the macro, the paper-nonideal preset's non-idealities scaled by a ladder, one ladder per row
# mapping in BUDGET_MAPPINGS and threshold placement in BUDGET_PLACEMENTS (floor: the paper's
# law; half_up: centred thresholds; calibrated: floor with the measured code offsets in the
# NMC; half_up-calibrated: both), BUDGET_PROCESSES runs at a time sharing the GPU (imcsim noise-budget --processes: no
# Dask on that machine).  A ladder is (scales + 1) x seeds runs of about 4 minutes each in
# waves of BUDGET_PROCESSES: all six ladders need about 25 minutes, more than one session's
# device time, so name a subset per session.  Folders vgg-lite-<mapping>-<placement> come
# back; copy them into docs/results/noise-budget and run scripts/noise_budget_results.py.
BUDGET_MAPPINGS=${BUDGET_MAPPINGS:-one-hot}
BUDGET_PLACEMENTS=${BUDGET_PLACEMENTS:-half_up}
BUDGET_LIMIT=${BUDGET_LIMIT:-300}
for mapping in $BUDGET_MAPPINGS; do
    for placement in $BUDGET_PLACEMENTS; do
        case $placement in
            calibrated) law=(--adc-rounding floor --calibrate-offsets) ;;
            half_up-calibrated) law=(--adc-rounding half_up --calibrate-offsets) ;;
            *) law=(--adc-rounding "$placement") ;;
        esac
        # shellcheck disable=SC2086  # BUDGET_ARGS is a list of options
        step "noise_budget_${mapping}_$placement" "$BUDGET_LIMIT" imcsim noise-budget \
            ${BUDGET_ARGS:---model vgg-lite --data digits32} "${law[@]}" \
            --input-mapping "$mapping" --scales "${BUDGET_SCALES:-0,0.25,1,4}" \
            --seeds "${BUDGET_SEEDS:-0,1}" --processes "${BUDGET_PROCESSES:-12}" \
            --set "device=${BUDGET_DEVICE:-cuda}" --quiet \
            --out "$WORK/vgg-lite-$mapping-$placement"
    done
done
# timings last, on a GPU and a host that the training runs no longer share
step vgg_step_gpu 75 $PY scripts/time_vgg_step.py --device cuda --steps 3
# the GEMM count path (issue 21), TF32 tensor cores allowed (exact on +/-1 operands)
IMCSIM_CUDA_COUNT_PATH=gemm CUPY_TF32=1 \
    step vgg_step_gpu_gemm 75 $PY scripts/time_vgg_step.py --device cuda --steps 3
IMCSIM_CUDA_COUNT_PATH=gemm CUPY_TF32=1 IMCSIM_TEST_REAL_GPU=1 IMCSIM_CUDA_EXAMPLES=30 \
    step cuda_tests_gemm 120 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py -k gemm
step bench_layers 90 $PY benchmarks/bench_layers.py --device cuda,cpu --batch 32 \
    --layers L2,L4,L6,L7 --repeat 3 --json "$WORK/bench_layers.json"
step bench_layers_resident 60 $PY benchmarks/bench_layers.py --device cuda --resident \
    --batch 128 --layers L2,L4,L7 --repeat 3 --json "$WORK/bench_layers_resident.json"

step bench_threads 75 $PY benchmarks/bench_layers.py --device cpu --batch 16 \
    --layers L2,L4 --repeat 3 --threads 1,4,16 --json "$WORK/bench_threads.json"
log "done"
tail -n 80 "$OUT/summary.txt"
