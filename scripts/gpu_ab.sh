#!/usr/bin/env bash
# One device call that verifies a candidate build and measures it against a baseline build in the
# same run: scripts/gpu.sh over the candidate's binaries (.devbin.tgz: every GPU test, the
# sanitizer stage, demo and example graphs, the suites named) with QFUSE_BASELINE set to the
# baseline's qfuse (.devbin_main.tgz, `bash scripts/ab_pending.sh pack main`), whose suites run
# right after for the summary's new / old table; then the engine-rule SiLU T 16 rows (issue 17's
# last row, not in a suite) of both binaries, two rounds. Carry .devbin.tgz and .devbin_main.tgz.
#   bash scripts/gpu_ab.sh [suites] (default "wgmma_rate mla_decode small"); GPU_AB_TIMEOUT_S caps
#   scripts/gpu.sh (default 480). Logs in $OUT (or /tmp/qfuse-gpu-ab), g.tgz of them in $OUT too.
set -u
cd "$(dirname "$0")/.."
suites=${1:-wgmma_rate mla_decode small}
out=${OUT:-/tmp/qfuse-gpu-ab}
work=$(mktemp -d)
mkdir -p "$work/g" "$work/base" "$out"
tar xzf .devbin_main.tgz -C "$work/base" || exit 1
echo "baseline: $(cat "$work/base/.devbin/MANIFEST" 2>/dev/null)"
OUT="$work/g" QFUSE_PEERS=${QFUSE_PEERS:-0} SANITIZE_BUDGET=${SANITIZE_BUDGET:-40} \
  QFUSE_GPU_PYTHON=${QFUSE_GPU_PYTHON:-0} QFUSE_NOPDL=${QFUSE_NOPDL:-0} \
  QFUSE_BASELINE="$work/base/.devbin/qfuse" timeout -k 5 "${GPU_AB_TIMEOUT_S:-480}" \
  bash scripts/gpu.sh "$suites" >"$work/g/gpu_stdout.txt" 2>&1
echo "scripts/gpu.sh: exit $?"
source scripts/ab_lib.sh
for r in 1 2; do
  engine_rows .devbin/qfuse "$work/g" "cand_$r"
  engine_rows "$work/base/.devbin/qfuse" "$work/g" "base_$r"
done
tar czf "$out/g.tgz" -C "$work/g" .
grep -A100 "== summary ====" "$work/g/gpu_stdout.txt" | head -130
echo "== engine-rule SiLU T 16, candidate and baseline"
python3 scripts/ab_medians.py "$work/g" base cand base | grep -E "^(==|silu)"
