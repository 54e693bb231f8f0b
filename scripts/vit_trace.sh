#!/usr/bin/env bash
# The FP8 ViT kernel's timeline on the GPU machine (src/vit_attention/trace.h, bench/NOTES.md
# V37): the qfuse of a QFUSE_VIT_TRACE build (.devtrace/, or .devbin_trace.tgz unpacked; `make
# trace-build` here), one process a row, each row's last call's timeline summarised by
# scripts/vit_trace.py. The timed figures of this build are not the release kernel's (the
# trace stores add a little): compare the parts, not the totals, with other runs.
#   bash scripts/vit_trace.sh         rows: VIT_TRACE_ROWS, separated by ';' (default below)
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/qfuse-vit-trace}
mkdir -p "$out"
[ -x .devtrace/qfuse ] || tar xzf .devbin_trace.tgz
default="vit_attention/fp8:tc S=4096 NIMG=1;vit_layer/fp8_static:tc S=4096 NIMG=1"
default+=";vit_attention/fp8:tc S=16384 NIMG=1"
IFS=';' read -r -a rows <<<"${VIT_TRACE_ROWS:-$default}"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
for i in "${!rows[@]}"; do
  read -r -a row <<<"${rows[$i]}"
  dims=()
  for d in "${row[@]:1}"; do dims+=(--dim "$d"); done
  QFUSE_VIT_TRACE_OUT="$out/trace_$i.bin" timeout 90 .devtrace/qfuse bench --op "${row[0]}" \
    "${dims[@]}" --budget-s 1 --no-unfused >"$out/bench_$i.txt" 2>&1 ||
    echo "failed: ${rows[$i]}: $(tail -1 "$out/bench_$i.txt")"
  echo "== ${rows[$i]}"
  tail -3 "$out/bench_$i.txt"
  python3 scripts/vit_trace.py "$out/trace_$i.bin" 2>&1
done
