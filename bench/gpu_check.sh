#!/usr/bin/env bash
# Benchmark 5: the GPU check. Run from the repository root on a machine with an NVIDIA GPU:
#
#     bash bench/gpu_check.sh            # PYTHON=... to choose the interpreter (default .venv/bin/python, else python3)
#     bash bench/gpu_check.sh steps accuracy encoder      # only these parts (names below); the summary lists
#                                                         # every part's latest JSON
#
# Parts: inference (benchmark 1), training (benchmark 3), steps and accuracy (issue 19, bench/gpu_training.py),
# encoder and load (issue 19, bench/gpu_inference.py, bench/load.py), torchrun, collectives, service, parity. The
# parts before issue 19's took 151 s on an H200; with them, an estimated 8-9 minutes (not yet timed): where one
# command may last less, run "steps accuracy encoder load" and the rest in two calls.
#
# Installs nothing (GPU machines here have no network). On the GPU: benchmark 1 (bench/inference.py, PyTorch and
# ONNX Runtime, CPU and CUDA) and benchmark 3 (bench/training.py, short settings); issue 19's step options and
# short training (bench/gpu_training.py), encoder inference fed each way (bench/gpu_inference.py) and /v1/detect
# on CUDA under load with micro-batching (bench/load.py); the README's training under torchrun with one process
# per GPU for one short epoch (issue 5); the training package's collectives on the GPU backend (NCCL; a group of
# one on a one-GPU machine); the service itself (the real app, lifespan included) on CUDA vs CPU; ONNX Runtime
# CUDA vs CPU parity on models/ (bench/gpu_check.py); then one table.
# What each part needs beyond the training extra: the ORT CUDA rows and the parity part an onnxruntime with
# CUDAExecutionProvider (onnxruntime-gpu; CUDA/cuDNN from PyTorch's or its own wheels), the service part the
# service extra (fastapi, pydantic-settings, python-multipart), checkpoints/ the inference part.
# A part whose imports or inputs are missing is skipped with the reason in the table instead of failing the
# run: e.g. h5py absent (benchmark 3), checkpoints/ absent (benchmark 1 compares against the PyTorch models
# in it, and it is not in git: carry it to the GPU machine). Without a GPU it still runs everything on the
# CPU, with short settings, writes the JSON to a temporary folder (not bench/results/) and says so.
set -u
cd "$(dirname "$0")/.."
PARTS=("$@")
want() { [ ${#PARTS[@]} -eq 0 ] || [[ " ${PARTS[*]} " == *" $1 "* ]]; }
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
START=$(date +%s)
SKIPPED=()
skip() { echo "SKIP $1"; SKIPPED+=(--skipped "$1"); }

# Which module a part lacks, in one line ("" when everything imports).
missing() { "$PYTHON" -c "import $1" 2>&1 | grep -oE "No module named '[^']+'|cannot import name '[^']+'" | head -1; }

if ! "$PYTHON" -c "import numpy, onnxruntime" 2>/dev/null; then
    echo "gpu_check: $PYTHON cannot import numpy and onnxruntime; nothing to check" >&2
    exit 2
fi
GPU=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>/dev/null)
NGPU=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
if [ -z "$GPU" ]; then
    echo "gpu_check: NO GPU visible to PyTorch: running the CPU rows only, with short settings, results in a temporary folder"
    BENCH_RESULTS_DIR=$(mktemp -d)
    export BENCH_RESULTS_DIR
    INF_ARGS=(--batches 1 8 --seconds 0.3 --rounds 1)
    TRAIN_ARGS=(--steps 2 --encode 256 --file-images 512 --faces 20000 --non-faces 20000)
    STEP_ARGS=(--variants device bf16 --steps 1 --warmup 1 --images 512 --encode 256)
    GINF_ARGS=(--batches 16 --seconds 0.1)
    PROCS=2
    RUN_ARGS=(--device cpu --steps-per-epoch 3 --mine-rounds 0 --tune-steps 0)  # the 150 s below on 2 cores
else
    echo "gpu_check: GPU $GPU"
    INF_ARGS=(--batches 1 8 64 256 --seconds 0.6 --rounds 2)
    TRAIN_ARGS=(--steps 10 --encode 2048 --file-images 2048)
    STEP_ARGS=()
    GINF_ARGS=(--batches 1024 4096 16384 --seconds 0.5)
    PROCS=$NGPU
    RUN_ARGS=(--device cuda --steps-per-epoch 20)
fi
OUT_DIR="${BENCH_RESULTS_DIR:-bench/results}"
for part in inference training torchrun collectives service parity; do want $part && rm -f "$OUT_DIR/gpu_check_$part.json"; done
want steps && rm -f "$OUT_DIR/gpu_training.json"
want accuracy && rm -f "$OUT_DIR/gpu_training_accuracy_cuda.json"
want encoder && rm -f "$OUT_DIR/gpu_inference.json"
want load && rm -f "$OUT_DIR/gpu_load.json"

# Benchmark 1: inference engines (needs PyTorch, the training package's model code and checkpoints/).
why=$(missing bench.inference)
if ! want inference; then :
elif [ -n "$why" ]; then skip "1 inference: $why"
elif [ ! -f checkpoints/cnn.pt ] || [ ! -f checkpoints/dbvae.pt ]; then
    skip "1 inference: checkpoints/cnn.pt or dbvae.pt missing (python -m training makes them; carry them to this machine)"
else
    timeout 150 "$PYTHON" -m bench.inference "${INF_ARGS[@]}" --out gpu_check_inference || skip "1 inference: exited with status $?"
fi

# Benchmark 3: training throughput on synthetic data (needs PyTorch, h5py, tqdm).
why=$(missing bench.training)
if ! want training; then :
elif [ -n "$why" ]; then skip "3 training: $why"
else
    timeout 120 "$PYTHON" -m bench.training "${TRAIN_ARGS[@]}" --out gpu_check_training || skip "3 training: exited with status $?"
fi

# Issue 19: the DB-VAE's step from the training set held on the device, under each step option, then a short real
# training on the GPU with the options that won, against the CPU reference in bench/results/.
why=$(missing bench.gpu_training)
if ! want steps && ! want accuracy; then :
elif [ -n "$why" ]; then skip "19 training: $why"
else
    if want steps; then
        timeout 240 "$PYTHON" -m bench.gpu_training "${STEP_ARGS[@]}" --out gpu_training || skip "19 step options: exited with status $?"
    fi
    if ! want accuracy; then :
    elif [ -n "$GPU" ]; then
        OPTS=$("$PYTHON" -c "from bench.common import read_result; print(','.join((read_result('gpu_training') or {}).get('winners', [])))")
        timeout 150 "$PYTHON" -m bench.gpu_training accuracy --device cuda --step-options "$OPTS" \
            || skip "19 accuracy: exited with status $?"
    else
        skip "19 accuracy: no GPU (the CPU reference is bench/results/gpu_training_accuracy_cpu.json)"
    fi
fi

# Issue 19: the exported DB-VAE encoder on ORT CUDA fed each way (host arrays, io binding, fp16, TensorRT).
if want encoder; then
    timeout 150 "$PYTHON" -m bench.gpu_inference "${GINF_ARGS[@]}" --out gpu_inference || skip "19 inference: exited with status $?"
fi

# Issue 19: /v1/detect on CUDA, micro-batching off and on (up to 256 images per run), driven by 4 load-generator
# processes (bench/load.py, 64x64 face PNGs, 256 connections in all).
why=$(missing "bench.load, skimage, sklearn, fastapi, service.main")
if ! want load; then :
elif [ -n "$why" ]; then skip "19 load: $why"
elif [ -z "$GPU" ]; then skip "19 load: no GPU (bench/results/load.json is the CPU run)"
else
    timeout 150 "$PYTHON" -m bench.load --servers detect detect+batch --batch-max 256 --batch-wait-ms 2 \
        --payloads png64 --concurrency 256 --clients 4 --seconds 5 --warmup 1 --warmup-burst 2 --no-wrk \
        --out gpu_load || skip "19 load: exited with status $?"
fi

# Issue 5: the README's training command under torchrun, one process per GPU, one short epoch, into a
# temporary folder (models/ and checkpoints/ are left alone).
why=$(missing "training.cli, skimage, sklearn, h5py, onnxscript")
if ! want torchrun; then :
elif [ -n "$why" ]; then skip "torchrun: $why"
else
    RUN_DIR=$(mktemp -d)
    T0=$(date +%s)
    timeout 150 "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$PROCS" -m training \
        "${RUN_ARGS[@]}" --epochs 1 --no-progress --out-dir "$RUN_DIR/models" --checkpoint-dir "$RUN_DIR/ckpt" \
        > "$RUN_DIR/log" 2>&1
    status=$?
    "$PYTHON" -m bench.gpu_check torchrun --models-dir "$RUN_DIR/models" --status $status --procs "$PROCS" \
        --seconds $(( $(date +%s) - T0 )) --log "$RUN_DIR/log"
fi

# The collectives of training.distributed and resampling, and one DDP step, on the backend of this machine.
why=$(missing "training.distributed, training.resampling")
if ! want collectives; then :
elif [ -n "$why" ]; then skip "collectives: $why"
else
    timeout 120 "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$PROCS" -m bench.gpu_check collectives
    status=$?
    [ ! -f "${BENCH_RESULTS_DIR:-bench/results}/gpu_check_collectives.json" ] && skip "collectives: exited with status $status"
fi

# The service on the GPU: the real app with FACEDET_REQUIRE_GPU, against the same app on the CPU provider.
why=$(missing "fastapi, pydantic_settings, python_multipart, httpx, service.main, bench.quality")
if ! want service; then :
elif [ -n "$why" ]; then skip "service: $why"
elif [ -z "$GPU" ]; then skip "service: no GPU (the app with FACEDET_REQUIRE_GPU=1 rightly refuses to be ready)"
else
    timeout 120 "$PYTHON" -m bench.gpu_check service
    status=$?
    [ ! -f "${BENCH_RESULTS_DIR:-bench/results}/gpu_check_service.json" ] && skip "service: exited with status $status"
fi

# ONNX Runtime CUDA vs CPU on the committed models.
if want parity; then
    timeout 60 "$PYTHON" -m bench.gpu_check parity
    status=$?
    [ $status -gt 1 ] && skip "5 parity: exited with status $status"
fi

"$PYTHON" -m bench.gpu_check summary "${SKIPPED[@]}"
echo "gpu_check: $(( $(date +%s) - START )) s; JSON in ${BENCH_RESULTS_DIR:-bench/results}"
[ -z "$GPU" ] && echo "gpu_check: ran WITHOUT a GPU: no CUDA number above was measured"
exit 0
