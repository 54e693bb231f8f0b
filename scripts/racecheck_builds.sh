#!/usr/bin/env bash
# compute-sanitizer racecheck of test_vit_attention over several builds and settings in one device
# call, to place a hazard (bench/NOTES.md V28, V30). Builds: .devbin/ (or .devbin.tgz: "main")
# and each .devbin_<name>.tgz packed with its test_vit_attention (scripts/ab_pending.sh pack NAME
# with-tests, or qfuse and test_vit_attention alone). On the device:
#   RC_CASES="main peek2 skbn:QFUSE_VIT_TC_IDLE=0" bash scripts/racecheck_builds.sh
# A case is a build name, optionally ':' and VAR=value settings joined by ','. RC_FILTER: the
# gtest filter (default: the fused-Q layer test and the stream-K grids); RC_TIMEOUT_S a case
# (default 120: the default filter takes ~65 s under racecheck on an H100). Logs in $OUT (or
# /tmp/qfuse-racecheck); a table of cases last.
set -u
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-/tmp/qfuse-racecheck}
mkdir -p "$out"
export PATH=/usr/local/cuda/bin:$PATH
filter=${RC_FILTER:-VitLayer.FusedQLayerEqualsItsParts:Grids/VitAttentionStreamK.*}
[ -x .devbin/test_vit_attention ] || [ ! -f .devbin.tgz ] || tar xzf .devbin.tgz
bins=${AB_BINS:-/tmp/qfuse-rc-bins}
nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader
table=()
for case in ${RC_CASES:-main}; do
  name=${case%%:*}
  settings=""
  [ "$case" = "$name" ] || settings=${case#*:}
  if [ "$name" = main ]; then
    dir=.devbin
  else
    dir=$bins/$name/.devbin
    [ -x "$dir/test_vit_attention" ] || { mkdir -p "$bins/$name" && tar xzf ".devbin_$name.tgz" -C "$bins/$name"; }
  fi
  log="$out/rc_$(echo "$case" | tr -c 'A-Za-z0-9_.\n' '_').log"
  t0=$SECONDS
  # shellcheck disable=SC2046
  env $(echo "$settings" | tr ',' ' ') timeout -k 5 "${RC_TIMEOUT_S:-120}" compute-sanitizer \
    --tool racecheck --error-exitcode 86 --print-limit 20 "$dir/test_vit_attention" \
    --gtest_filter="$filter" >"$log" 2>&1
  rc=$?
  summary=$(grep -oE 'RACECHECK SUMMARY: [0-9]+ hazards displayed \([0-9]+ errors' "$log" | tail -1)
  passed=$(grep -oE '\[  PASSED  \] [0-9]+' "$log" | grep -oE '[0-9]+$')
  # A case cut short by its timeout says how far it got (the tests run in link order, not the
  # filter's: the fused-Q layer test comes last) and whether any hazard was printed by then.
  reached=$(grep -oE '^\[ RUN      \] [^ ]+' "$log" | tail -1 | sed 's/.*\] //')
  hazards=$(grep -c 'Race reported' "$log")
  table+=("$(printf '%-40s exit %-3s %3ss  passed %-4s %s; last test %s, %s race reports (%s)' \
    "$case" "$rc" $((SECONDS - t0)) "${passed:-?}" "${summary:-no summary}" "${reached:-none}" \
    "$hazards" "$(cat "$dir/MANIFEST" 2>/dev/null)")")
  grep -m6 -E 'Race reported|and (Read|Write) access' "$log" | sed 's/^=========  */  /' | cut -c1-220
done
echo "== racecheck of test_vit_attention (--gtest_filter=$filter)"
printf '%s\n' "${table[@]}"
