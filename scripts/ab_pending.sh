#!/usr/bin/env bash
# The experiments prepared without a device (bench/NOTES.md, "Prepared for the next device
# calls"), in one device call. Binaries, each a tarball of .devbin/ with a MANIFEST line naming the
# commit it was built from (`bash scripts/ab_pending.sh pack NAME` here packs build/'s):
#   .devbin_main.tgz  main                              qfuse
#   .devbin_sr1.tgz   wip/mla-stage-release, 1st commit  qfuse          (M23, NOTES 47)
#   .devbin_sr.tgz    wip/mla-stage-release, tip         qfuse + tests  (+ M24, M27, NOTES 48)
#   .devbin_q8.tgz    wip/mla-fp8-q8, tip                qfuse + test_mla_decode (M26: form 3)
# On the device:  bash scripts/ab_pending.sh [parts]   parts: any of tests rates mla small
# (default: all four; the tests take up to ~2 minutes a binary, the mla part ~30 s per suite run,
# 8 of them with AB_ROUNDS=2, the default: within one 10-minute call only if the tests are quick,
# so "tests rates" and "mla small" as two calls is the safe split; AB_ROUNDS=1 halves the mla and
# small parts). Logs and JSON in $OUT; a table of medians per row, each binary against main, last.
set -u
cd "$(dirname "$0")/.."
source scripts/ab_lib.sh

if [ "${1:-}" = pack ]; then  # here: bash scripts/ab_pending.sh pack NAME [with-tests]
  name=$2
  tmp=$(mktemp -d) && mkdir -p "$tmp/.devbin"
  cp build/qfuse "$tmp/.devbin/"
  if [ "${3:-}" = with-tests ]; then
    cp $(find build/tests -maxdepth 2 -type f -name "test_*" -perm -u+x) "$tmp/.devbin/"
  elif [ "${3:-}" = with-mla-test ]; then
    cp build/tests/mla_decode/test_mla_decode "$tmp/.devbin/"
  fi
  strip "$tmp/.devbin/"*
  echo "$(git rev-parse --short HEAD) $(git rev-parse --abbrev-ref HEAD)$(git diff --quiet || echo ' (dirty)')" \
    >"$tmp/.devbin/MANIFEST"
  tar czf ".devbin_$name.tgz" -C "$tmp" .devbin && rm -rf "$tmp"
  ls -la ".devbin_$name.tgz" && exit 0
fi

parts=${1:-tests rates mla small}
rounds=${AB_ROUNDS:-2}
out=${OUT:-/tmp/qfuse-pending}
bins=${AB_BINS:-/tmp/qfuse-ab-bins}  # where the tarballs are unpacked (outside the repo)
mkdir -p "$out"
export PATH=/usr/local/cuda/bin:$PATH
vars=""
for v in main sr1 sr q8; do
  if [ -f ".devbin_$v.tgz" ]; then
    rm -rf "${bins:?}/$v" && mkdir -p "$bins/$v" && tar xzf ".devbin_$v.tgz" -C "$bins/$v"
    echo "$v: $(cat "$bins/$v/.devbin/MANIFEST")"
    vars="$vars $v"
  fi
done
has() { case " $vars " in *" $1 "*) return 0 ;; esac; return 1; }
has_part() { case " $parts " in *" $1 "*) return 0 ;; esac; return 1; }

if has_part tests; then
  for t in test_mla_decode test_act_quant test_merge_states test_quantize; do
    [ -x "$bins/sr/.devbin/$t" ] || continue
    timeout 120 "$bins/sr/.devbin/$t" --gtest_brief=1 >"$out/sr_$t.log" 2>&1
    echo "sr $t: exit $? ($(grep -cE '^\[  FAILED  \] [A-Za-z]' "$out/sr_$t.log") failed)"
  done
  if [ -x "$bins/q8/.devbin/test_mla_decode" ]; then
    timeout 120 "$bins/q8/.devbin/test_mla_decode" --gtest_brief=1 >"$out/q8_test_mla_decode.log" 2>&1
    echo "q8 test_mla_decode: exit $? ($(grep -cE '^\[  FAILED  \] [A-Za-z]' \
      "$out/q8_test_mla_decode.log") failed)"
  fi
fi

if has_part rates && has main; then
  timeout 120 "$bins/main/.devbin/qfuse" bench --suite wgmma_rate --json "$out/rates.json" \
    >"$out/rates.txt" 2>&1
  [ -f "$out/rates.json" ] || echo "  no rates.json: $(tail -1 "$out/rates.txt")"
fi

# One binary's run of a suite (or op) into $out/<tag>_<round>.json.
run() {  # tag variant envs -- bench arguments
  local tag=$1 v=$2 envs=$3
  shift 4
  env $envs timeout 200 "$bins/$v/.devbin/qfuse" bench "$@" --no-unfused --json "$out/${tag}.json" \
    >"$out/${tag}.txt" 2>&1
}

if has_part mla; then
  for r in $(seq 1 "$rounds"); do
    for v in main sr1 sr; do has $v && run "mla_${v}_$r" $v "" -- --suite mla_decode; done
    has q8 && run "mla_q8_$r" q8 "QFUSE_MLA_FP8_FORM=3" -- --suite mla_decode
  done
fi

if has_part small; then
  for r in $(seq 1 "$rounds"); do
    for v in main sr1 sr; do
      has $v || continue
      run "small_${v}_$r" $v "" -- --suite small
      engine_rows "$bins/$v/.devbin/qfuse" "$out" "${v}_$r"
    done
  done
fi

python3 scripts/ab_medians.py "$out" main $vars
