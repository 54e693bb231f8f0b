#!/usr/bin/env bash
# A/B on the MLA decode suite in one device call: two interleaved rounds of
# `qfuse bench --suite mla_decode` per side, medians and B/A per row (bf16 and fp8 rows).
#   Two builds:     bash scripts/ab_mla.sh
#                   A = .devbin_v1.tgz (an earlier `make devbin`, copied aside), B = .devbin.tgz;
#                   the test binary of B runs first. Carry .devbin.tgz and .devbin_v1.tgz.
#                   A third build C = .devbin_v2.tgz (an intermediate) joins when present and
#                   carried: each round runs A, C, B, and the table gives C/A and B/A.
#   One build, two settings (environment variables of the process, e.g. bench/NOTES.md M15, M16):
#                   AB_ENV_A="QFUSE_MLA_DIRECT=0" AB_ENV_B="" bash scripts/ab_mla.sh
#                   AB_ENV_A="QFUSE_MLA_FP8_WIDE=0" AB_ENV_B="" bash scripts/ab_mla.sh
#                   AB_ENV_A="" AB_ENV_B="QFUSE_MLA_WIDE_FORM=2" bash scripts/ab_mla.sh
#                   (either variable set: .devbin.tgz for both sides). Carry .devbin.tgz.
set -u
if [ -n "${AB_ENV_A+x}${AB_ENV_B+x}" ]; then
  mkdir -p B && tar xzf .devbin.tgz -C B && ln -sfn B A
  echo "== one build: A with '${AB_ENV_A:-}', B with '${AB_ENV_B:-}'"
else
  mkdir -p A B && tar xzf .devbin_v1.tgz -C A && tar xzf .devbin.tgz -C B
  [ -f .devbin_v2.tgz ] && mkdir -p C && tar xzf .devbin_v2.tgz -C C
  B/.devbin/test_mla_decode --gtest_brief=1 2>&1 | grep -E "FAILED|PASSED|SKIPPED|Failure" | head -20
fi
variants="A B"
[ -d C ] && [ -z "${AB_ENV_A+x}${AB_ENV_B+x}" ] && variants="A C B"
for r in 1 2; do
  for v in $variants; do
    envs=$([ "$v" = A ] && echo "${AB_ENV_A:-}" || echo "${AB_ENV_B:-}")
    env $envs $v/.devbin/qfuse bench --suite mla_decode --no-unfused --json /tmp/$v$r.json \
      >/tmp/$v$r.txt 2>&1
  done
done
python3 - <<'PY'
import json,statistics
def load(v):
    out={}
    for r in (1,2):
        for x in json.load(open(f"/tmp/{v}{r}.json"))["results"]:
            k=x["routine"]+" "+" ".join(f"{a}={b}" for a,b in x["shape"].items())
            out.setdefault(k,[]).append(x["timing"]["median_us"])
    return out
import os
a,b=load("A"),load("B")
c=load("C") if os.path.exists("/tmp/C1.json") and os.path.isdir("C") else None
for k in a:
    if "read_only" in k or k not in b: continue
    ma,mb=statistics.median(a[k]),statistics.median(b[k])
    mid=""
    if c is not None and k in c:
        mc=statistics.median(c[k])
        mid=f" C {mc:9.2f} C/A {mc/ma:.3f}"
    print(f"{k:60} A {ma:9.2f}{mid} B {mb:9.2f} B/A {mb/ma:.3f}")
PY
