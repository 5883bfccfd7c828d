#!/usr/bin/env bash
# The committed rehearsals (benchmarks/results/rehearsal_*): the recipe at real size on this machine, one model
# family after another, and the validation runs where the full model fits here. ~2 h on 2 cores / 24 GiB.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/rehearse}
R="python -m hatch_vlm rehearse --budget ${BUDGET:-19}"
$R --config configs/qwen25vl_3b_spar.yaml --model configs/models/Qwen2.5-VL-3B-Instruct --out $OUT/3b --name qwen2.5-vl-3b
$R --config benchmarks/rehearsal/pasta_validation.yaml --model configs/models/Qwen2.5-VL-3B-Instruct \
   --out $OUT/3b-validation --name qwen2.5-vl-3b-pasta-validation
$R --config configs/qwen25vl_3b_spar.yaml --model configs/models/Qwen3-VL-2B-Instruct --stages pasta eval \
   --out $OUT/qwen3-2b --name qwen3-vl-2b-validation
$R --config benchmarks/rehearsal/pasta_validation.yaml --model configs/models/Qwen3-VL-2B-Instruct \
   --out $OUT/qwen3-2b-pasta --name qwen3-vl-2b-pasta-validation
$R --config benchmarks/rehearsal/sft_proxy_validation.yaml --model configs/models/Qwen2.5-VL-3B-Instruct \
   --out $OUT/3b-sft-proxy --name qwen2.5-vl-3b-sft-proxy-validation
$R --config configs/qwen25vl_3b_spar.yaml --model configs/models/Qwen3-VL-4B-Instruct --out $OUT/qwen3-4b --name qwen3-vl-4b
$R --config configs/qwen25vl_3b_spar.yaml --model configs/models/InternVL3-8B-hf --out $OUT/internvl3-8b --name internvl3-8b \
   --steps 1
mkdir -p benchmarks/results
cp $OUT/*/rehearsal_* benchmarks/results/
