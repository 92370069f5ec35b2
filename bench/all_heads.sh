#!/usr/bin/env bash
# The all-heads table of BENCHMARKS.md: every head of heads.HEADS trained on one synthetic
# relational store pair (16 + 5 videos x 30 keyframes, all levels, tracks), 2 seeds, CPU.
# About 15 minutes on one free CPU core. Usage: bench/all_heads.sh [OUT_DIR]
set -euo pipefail
out="${1:-bench_out/all_heads}"
mkdir -p "$out"
synth store --out "$out/train.zarr" --split train --seed 0 --videos 16 --keyframes 30 --levels roi,temporal,context
synth store --out "$out/val.zarr" --split val --seed 0 --videos 5 --first-video 100 --keyframes 30 --levels roi,temporal,context
extract tracks --store "$out/train.zarr"
extract tracks --store "$out/val.zarr"
ablate --preset all-heads-synthetic --train-store "$out/train.zarr" --val-store "$out/val.zarr" \
    --out "$out/ablate" --device cpu --no-progress
echo "table: $out/ablate/results.md"
