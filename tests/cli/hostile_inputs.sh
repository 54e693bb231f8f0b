#!/usr/bin/env bash
# `qfuse fuse` and `qfuse calibrate` on hostile input: each case must exit 1 (CLI11 usage errors:
# 105..109) within 20 s and print a message holding the expected fragment; nothing may be killed
# by a signal or run out of memory. The calibrate cases are argument errors, found before the
# device is touched (the same on machines with and without a GPU); none writes its --out.
# Usage: hostile_inputs.sh QFUSE_BINARY SOURCE_DIR
set -uo pipefail
qfuse=${1:?qfuse binary}
src=${2:?source dir}
g="$src/examples/graphs/deepseek_v3_mlp.json"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkfifo "$tmp/fifo"
printf '{"fuse_act_quant": true, "fuse_act_quant": false}' >"$tmp/dup.json"
printf '{"name": "x", "name": "y"}' >"$tmp/dup_graph.json"
python3 -c 'print("[" * 100000 + "]" * 100000)' >"$tmp/deep.json" 2>/dev/null ||
  printf '%s' "$(printf '[%.0s' $(seq 1 5000))" >"$tmp/deep.json"

# NOTE: a memory cap, so that a regression (reading /dev/zero, say) fails instead of exhausting
# the machine: ASan's own RSS limit in a sanitizer build (ulimit -v would break its shadow
# mapping), else ulimit -v.
if grep -qa __asan_init "$qfuse"; then
  export ASAN_OPTIONS="${ASAN_OPTIONS:-}:hard_rss_limit_mb=4096"
  memcap=unlimited
else
  memcap=4000000
fi

passed=0
failed=0
# check "what" "fragment" args...
check() {
  local what=$1 fragment=$2
  shift 2
  local out rc
  out=$(ulimit -v $memcap; timeout 20 "$qfuse" "$@" 2>&1 </dev/null)
  rc=$?
  if [ $rc -ge 1 ] && [ $rc -le 109 ] && [[ "$out" == *"$fragment"* ]] && [[ "$out" != *"std::bad_alloc"$'\n'* || "$out" == *"out of host memory"* ]]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAILED: $what (exit $rc; expected a message with: $fragment)"
    echo "$out" | head -5 | cut -c1-300
  fi
}

check "--dim with trailing junk" "--dim T" fuse "$g" --host --dim T=4x
check "--dim T=4x names the accepted form" "NAME=SIZE with SIZE an integer in [0, 1099511627776]" fuse "$g" --host --dim T=4x
check "--dim negative" "got 'T=-1'" fuse "$g" --host --dim T=-1
check "--dim past int64" "(out of range)" fuse "$g" --host --dim T=99999999999999999999
check "--dim past the element limit" "(out of range)" fuse "$g" --host --dim T=1099511627777
check "--dim without a name" "got '=5'" fuse "$g" --host --dim =5
check "--dim with spaces" "got 'T= 4'" fuse "$g" --host --dim "T= 4"
check "--dim of an unknown dim" "dim override 'Q': the graph has no such dim" fuse "$g" --host --dim Q=4
check "graph /dev/zero" "expected a regular file, got a character device" fuse /dev/zero
check "graph FIFO" "expected a regular file, got a FIFO" fuse "$tmp/fifo"
check "graph directory" "directory" fuse "$tmp"
check "config /dev/zero" "config file '/dev/zero': expected a regular file" fuse "$g" --host --config /dev/zero
check "duplicate config key" "duplicate key 'fuse_act_quant'" fuse "$g" --host --config "$tmp/dup.json"
check "duplicate graph key" "duplicate key 'name'" fuse "$tmp/dup_graph.json"
check "deep nesting" "nesting deeper than 32 levels" fuse "$tmp/deep.json"
check "full-size dims on the host" "set smaller values for the dims T=4096 H=7168 I=2048" fuse "$g" --host --dim T=4096 --dim H=7168 --dim I=2048
check "bench case past the element limit" "expected a case of at most 2^40 elements" bench --op quantize --quant fp8_per_token --dim T=16777216 --dim H=268435456
check "bench --dim with junk" "--dim T=4x" bench --op quantize --quant fp8_per_token --dim T=4x
check "--seed with junk" "seed" fuse "$g" --host --seed 12abc
check "--reps out of range" "reps" fuse "$g" --host --reps 0

# qfuse calibrate: argument errors, before the device.
co="$tmp/cal.json"
check "calibrate without --out" "--out is required" calibrate --layers 2
check "calibrate --shape of two values" "--shape: expected S,H,D" calibrate --layers 2 --out "$co" --shape 4096,16
check "calibrate --shape with junk" "got '4096,16,72x'" calibrate --layers 2 --out "$co" --shape 4096,16,72x
check "calibrate --shape of an unsupported D" "64, 72, 80, 96 or 128, got 70" calibrate --layers 2 --out "$co" --shape 4096,16,70
check "calibrate --margin 0" "--margin: expected a finite number > 0, got 0" calibrate --layers 2 --out "$co" --margin 0
check "calibrate --margin -1" "--margin: expected a finite number > 0" calibrate --layers 2 --out "$co" --margin -1
check "calibrate --margin nan" "got nan" calibrate --layers 2 --out "$co" --margin nan
check "calibrate --margin junk" "--margin" calibrate --layers 2 --out "$co" --margin 1.5x
check "calibrate --forwards 0" "--forwards: expected 1..100000" calibrate --layers 2 --out "$co" --forwards 0
check "calibrate without layers" "--layers N" calibrate --out "$co"
check "calibrate --layers 0" "--layers: expected 1..4096, got 0" calibrate --layers 0 --out "$co"
check "calibrate --layers and --layer-names" "excludes" calibrate --layers 2 --layer-names a,b --out "$co"
check "calibrate empty layer name" "empty name at position 2" calibrate --layer-names a,,b --out "$co"
check "calibrate duplicate layer name" "'a' twice" calibrate --layer-names a,b,a --out "$co"
check "calibrate --out in a missing directory" "does not exist" calibrate --layers 2 --out "$tmp/nope/s.json"
check "calibrate --out a directory" "a directory" calibrate --layers 2 --out "$tmp"
if [ -e "$co" ]; then
  failed=$((failed + 1))
  echo "FAILED: calibrate wrote $co on an argument error"
fi

echo "cli hostile inputs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
