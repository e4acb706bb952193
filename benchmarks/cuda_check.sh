#!/usr/bin/env bash
# The GPU check of the metric engine (issue #14), prepared for a session that is lent a CUDA
# machine (the `device` tool; nothing in CI needs it).
#
#   bash benchmarks/cuda_check.sh bundle   # here: what the GPU machine lacks, into two
#                                          # ignored folders (.whl: wheels, .gpu: the
#                                          # default model's config and tokenizer)
#   then, with the device tool (one call is at most 600 s, so the steps go apart; a
#   session has 15 minutes of device time, so `ratios` first, `matrix` with what is left):
#     run(command="bash benchmarks/cuda_check.sh ratios", carry=[".whl", ".gpu"], timeout_s=590)
#     run(command="bash benchmarks/cuda_check.sh matrix", carry=[".whl", ".gpu"], timeout_s=390)
#   and, if device time is left: run(command="bash benchmarks/cuda_check.sh profile",
#                                    carry=[".whl", ".gpu"], timeout_s=150)
#                            or run(command="bash benchmarks/cuda_check.sh smoke",
#                                    carry=[".whl"], timeout_s=300)
#
# `run` (there) installs the carried wheels beside the image's PyTorch, then
#   1. checks compiled FlexAttention against a dense computation (`flex.ready`), then runs
#      the architecture matrix with the toys on the GPU (WORKBENCH_TEST_DEVICE=cuda;
#      Hugging Face's eager references stay on the CPU): both analysis paths, the credit
#      band pass (FlexAttention there), the credit options and the portable path;
#   2. times sdpa against wb.analyze (its tiles in the GPU's block sizes and in the CPU's:
#      what `workbench.attention.tiling` saves) and the credit pass (FlexAttention's band
#      path, and the tiles beside sdpa instead) at T = 8192 and 32768 (LENGTHS="8192" for
#      one) on a
#      SmolLM2-shaped model with random weights (benchmarks/metrics.py --device cuda
#      --random-weights; the embedded weights are too large to carry, and the cost
#      depends on the shapes alone).
# `matrix` and `ratios` run steps 1 and 2 of `run` alone (`run` needs up to 12 minutes).
# `profile` runs the credit cases at T = 8192 once more under torch.profiler and prints
# their costliest CUDA kernels (metrics.py --profile): where the credit's excess goes.
# `smoke` runs the user-facing paths on the GPU against the same calls on the CPU with the
# embedded tiny reasoner (benchmarks/cuda_smoke.py: analysis, credit, a knockout, a
# residual ablation, one native GRPO step); cuda_check.sh's matrix covers none of them.
# Everything it prints, and metrics.py's JSON, go to $OUT (the files that come back).
#
# The GPU image holds PyTorch (CUDA), tokenizers, safetensors, huggingface_hub, accelerate,
# jaxtyping, pandas, pyarrow and pytest (/work/.library/device/KINDS.md); the wheels are
# the lock's versions of the rest that an analysis imports. pyarrow (55 MB) is not carried:
# datasets 5.2 wants pyarrow >= 24, and step 0 prints the image's version.
set -euo pipefail
cd "$(dirname "$0")/.."

bundle() {
    for d in /.whl/ /.gpu/; do
        grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude
    done
    pin() { grep -m1 "^$1==" lock/requirements.txt | cut -d' ' -f1; }
    rm -rf .whl .gpu
    mkdir -p .whl .gpu/smollm2
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl \
        "$(pin transformers)" "$(pin transformer-lens)" "$(pin datasets)" "$(pin dill)" \
        "$(pin multiprocess)" "$(pin beartype)" "$(pin typeguard)" "$(pin fancy-einsum)" \
        "$(pin altair)" "$(pin jsonschema)" "$(pin jsonschema-specifications)" \
        "$(pin referencing)" "$(pin rpds-py)"
    model=$(.venv/bin/python -c "import workbench as wb; print(wb.models.model_path())")
    cp "$model"/config.json "$model"/tokenizer.json "$model"/tokenizer_config.json .gpu/smollm2/
    du -sh .whl .gpu
}

setup() {
    out=${OUT:-/tmp/cuda-check}
    device=${DEVICE:-cuda}       # DEVICE=cpu LENGTHS=256 NO_WHEELS=1: a dry run here
    mkdir -p "$out"
    [ -n "${LOGGING:-}" ] || exec > >(tee -a "$out/log.txt") 2>&1  # once (`run` sets up twice)
    LOGGING=1
    if [ -z "${NO_WHEELS:-}" ] && [ ! -d /tmp/site/transformers ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
    fi
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
    export WORKBENCH_CACHE=/tmp/workbench-cache
}

smoke() {
    setup
    echo "== 3. the user-facing paths on $device against the CPU"
    timeout 280 python3 benchmarks/cuda_smoke.py --device "$device" --json "$out/smoke.json" || true
}

matrix() {
    setup
    echo "== 0. the machine"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    # Each import on its own, reported and not fatal: a missing or too old package (pyarrow
    # for datasets, regex for transformers' tokenizers) is named here, and the steps run.
    python3 -c "import importlib
for name in ('torch', 'transformers', 'transformer_lens', 'regex', 'pyarrow', 'datasets'):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, '__version__', '?'))
    except Exception as e:
        print(name, 'FAILED:', type(e).__name__, str(e)[:200])
import torch
print('cuda', torch.version.cuda, torch.cuda.is_available())" || true
    echo "== 1. FlexAttention's check (the credit pass's flash call there), then the matrix"
    timeout 90 python3 -c "import time, torch
from workbench.attention import flex
t = time.perf_counter()
print('flex.ready:', flex.ready(torch.device('$device'), torch.float32),
      f'({time.perf_counter() - t:.1f} s, compilation included)')" || true
    # Four workers: Hugging Face's eager references run on the CPU (16 cores there) and
    # took most of the serial run's time.
    WORKBENCH_TEST_DEVICE=$device timeout 300 python3 -m pytest -p no:cacheprovider -q \
        -n "${WORKERS:-4}" --maxfail=5 --durations=5 tests/attention/test_architectures.py \
        -k "${K:-match_hf_eager or portable or credit_band}" || true
}

ratios() {
    setup
    lengths=${LENGTHS:-8192 32768}
    echo "== 2. ratios at 8K and 32K"
    # shellcheck disable=SC2086
    timeout 570 python3 benchmarks/metrics.py --device "$device" --random-weights \
        --model .gpu/smollm2 --lengths $lengths --timeout 240 \
        --configs sdpa analyze analyze-small-tiles sdpa-middle credit credit-tiles \
        --json "$out/metrics.json" || true
}

profile() {
    setup
    echo "== 4. where the credit pass's time goes at 8K"
    timeout 140 python3 benchmarks/metrics.py --device "$device" --random-weights \
        --model .gpu/smollm2 --lengths "${LENGTHS:-8192}" --timeout 120 --profile 15 \
        --configs sdpa-middle credit credit-tiles --json "$out/profile.json" || true
}

case "${1:-}" in
bundle) bundle ;;
run) matrix && ratios ;;
matrix) matrix ;;
ratios) ratios ;;
profile) profile ;;
smoke) smoke ;;
*)
    echo "usage: bash benchmarks/cuda_check.sh bundle|run|matrix|ratios|profile|smoke (see the top of this file)" >&2
    exit 2
    ;;
esac
