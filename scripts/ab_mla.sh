#!/usr/bin/env bash
# A/B of two builds on the MLA decode suite in one device call (bf16 rows): A = .devbin_v1.tgz
# (an earlier `make devbin`, copied aside), B = .devbin.tgz (the current one); the test binary of B
# first, then two interleaved rounds of `qfuse bench --suite mla_decode` each, medians and B/A.
#   device: bash scripts/ab_mla.sh   (carry .devbin.tgz and .devbin_v1.tgz)
set -u
mkdir -p A B && tar xzf .devbin_v1.tgz -C A && tar xzf .devbin.tgz -C B
B/.devbin/test_mla_decode --gtest_brief=1 2>&1 | grep -E "FAILED|PASSED|SKIPPED|Failure" | head -20
for r in 1 2; do
  for v in A B; do
    $v/.devbin/qfuse bench --suite mla_decode --json /tmp/$v$r.json > /tmp/$v$r.txt 2>&1
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
a,b=load("A"),load("B")
for k in a:
    if "fp8" in k or "read_only" in k: continue
    print(f"{k:60} A {statistics.median(a[k]):9.2f} B {statistics.median(b[k]):9.2f} B/A {statistics.median(b[k])/statistics.median(a[k]):.3f}")
PY
