#!/bin/sh
# The GPU benchmarks of issue 41 as one script on the lent GPU machine, inside 10 minutes of device time.
#
# Here, once:   make wheels       (the packages that machine lacks, as wheels in .whl/, about 48 MB)
# There:        the device tool's run with command "sh bench/device.sh", carry [".whl"], timeout_s 600
#
# 1. bench/gpu.py without the model steps (about 70 s there): the trial's input path with and without
#    page-locked batches, against the bare ResNet-50.
# 2. bench/paper_analysis.py --gpus 1: a run folder of paper shape (225 trials x 20,000 test images, a saved model
#    of each of 9 backbones) analysed end to end; goal <= 10 minutes of wall time.
# Everything goes to $OUT (gpu.json, gpu.log, paper.log), which comes back even when a step runs out of time.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "device.sh: the wheels did not install (run 'make wheels' here and carry .whl)"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
timeout 150 python3 bench/gpu.py --backbones --json "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.log" | tail -20
timeout 420 python3 bench/paper_analysis.py --gpus 1 2>&1 | tee "$OUT/paper.log" | tail -20
