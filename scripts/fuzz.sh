#!/usr/bin/env bash
# Runs each libFuzzer target of fuzz/ for a bounded time (issue 12, docs/hardening.md).
#
#   bash scripts/fuzz.sh BUILD_DIR SECONDS [TARGET ...]   (default targets: all four)
#
# Starts from the committed seed corpus fuzz/corpus/<target>; new inputs go to a scratch folder
# (never into the repository). A crash, a leak, a timeout (10 s per input) or a sanitizer report
# stops the target: its input is kept in $FUZZ_OUT (default /tmp/qfuse-fuzz) and the script
# exits 1 after the last target. Prints one summary line per target (runs, coverage, result).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:?build directory (make sanitize-build)}
seconds=${2:-45}
shift 2 || shift $#
targets=("$@")
((${#targets[@]})) || targets=(graph_json config quant_spec vit_scales)
out=${FUZZ_OUT:-/tmp/qfuse-fuzz}
mkdir -p "$out"

declare -A max_len=([graph_json]=16384 [config]=4096 [quant_spec]=512 [vit_scales]=8192)
status=0
passed=0
failed=0
for t in "${targets[@]}"; do
  bin="$build/fuzz/fuzz_$t"
  if [ ! -x "$bin" ]; then
    echo "fuzz $t: $bin is missing (make sanitize-build)"
    status=1
    failed=$((failed + 1))
    continue
  fi
  scratch="$out/corpus_$t"
  mkdir -p "$scratch"
  dict=()
  [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
  log="$out/fuzz_$t.log"
  start=$(date +%s)
  "$bin" "$scratch" "fuzz/corpus/$t" "${dict[@]}" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len="${max_len[$t]:-4096}" -print_final_stats=1 \
    -artifact_prefix="$out/$t-" >"$log" 2>&1
  rc=$?
  took=$(($(date +%s) - start))
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
  corpus=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1)
  if [ $rc -eq 0 ]; then
    result=clean
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    result="FINDING (exit $rc; $(grep -m1 -E 'ERROR|runtime error|deadly signal|timeout' "$log" |
      cut -c1-160)); input: $(ls -t "$out/$t-"* 2>/dev/null | head -1)"
    status=1
    tail -40 "$log"
  fi
  echo "fuzz $t: ${took}s, ${runs:-?} runs, ${cov:-cov ?}, ${corpus:-corp ?}: $result"
done
echo "fuzz: $passed passed, $failed failed"
exit $status
