#!/usr/bin/env bash
# Same-run A/B of several builds in one device call. Each build is a tarball .devbin_<name>.tgz of
# .devbin/ with a MANIFEST line naming the commit it was built from (`bash scripts/ab_pending.sh
# pack NAME [with-tests|with-mla-test]` here packs build/'s qfuse, and its test binaries).
# On the device:  bash scripts/ab_pending.sh [parts]   parts: any of tests rates mla chain small
# (default: all four). The builds: AB_VARIANTS (default: main, then every other .devbin_<name>.tgz
# present, .devbin.tgz aside); AB_ENV_<name>="VAR=value ..." sets a build's environment (e.g.
# AB_ENV_main2="QFUSE_MLA_FP8_FORM=2" over a copy of main). tests: each build's MLA and row-wise
# test binaries, where packed (up to ~2 minutes each); rates: the wgmma rates of main; mla / small:
# the mla_decode / small suite (+ the engine-rule SiLU T 16 rows) of every build, AB_ROUNDS rounds
# (default 2; ~30 s a suite run). Logs and JSON in $OUT; a table of medians per row, each build
# against main (AB_BASE: another build of the list), last (scripts/ab_medians.py).
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
default_vars="main $(ls .devbin_*.tgz 2>/dev/null | sed -E 's/^\.devbin_(.*)\.tgz$/\1/' | grep -vx main | tr '\n' ' ')"
for v in ${AB_VARIANTS:-$default_vars}; do
  if [ -f ".devbin_$v.tgz" ]; then
    rm -rf "${bins:?}/$v" && mkdir -p "$bins/$v" && tar xzf ".devbin_$v.tgz" -C "$bins/$v"
    echo "$v: $(cat "$bins/$v/.devbin/MANIFEST" 2>/dev/null)"
    vars="$vars $v"
  fi
done
envs_of() { local n="AB_ENV_$1"; echo "${!n:-}"; }
has() { case " $vars " in *" $1 "*) return 0 ;; esac; return 1; }
has_part() { case " $parts " in *" $1 "*) return 0 ;; esac; return 1; }

if has_part tests; then
  for v in $vars; do
    for t in test_mla_decode test_act_quant test_merge_states test_quantize; do
      [ -x "$bins/$v/.devbin/$t" ] || continue
      env $(envs_of $v) timeout 150 "$bins/$v/.devbin/$t" --gtest_brief=1 >"$out/${v}_$t.log" 2>&1
      echo "$v $t: exit $? ($(grep -cE '^\[  FAILED  \] [A-Za-z]' "$out/${v}_$t.log") failed)"
    done
  done
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
    for v in $vars; do run "mla_${v}_$r" $v "$(envs_of $v)" -- --suite mla_decode; done
  done
fi

if has_part chain; then  # MLA decode's own rate (L2-resident pages) beside DRAM (bench/NOTES.md M39)
  for r in $(seq 1 "$rounds"); do
    for v in $vars; do run "chain_${v}_$r" $v "$(envs_of $v)" -- --suite mla_chain; done
  done
fi

if has_part small; then
  for r in $(seq 1 "$rounds"); do
    for v in $vars; do
      run "small_${v}_$r" $v "$(envs_of $v)" -- --suite small
      env $(envs_of $v) bash -c "source scripts/ab_lib.sh; engine_rows $bins/$v/.devbin/qfuse $out ${v}_$r"
    done
  done
fi

python3 scripts/ab_medians.py "$out" "${AB_BASE:-main}" $vars
