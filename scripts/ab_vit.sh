#!/usr/bin/env bash
# The ViT experiments waiting for a device (bench/NOTES.md V8, V12), in one device call:
#   bash scripts/ab_vit.sh [parts]   parts: any of quant consumers b ncu (default: all four)
#   quant: the quantizer's forms (QFUSE_VIT_QUANT_FORM 0..7; AB_VIT_FORMS picks): the
#      quantization tests under each, then `qfuse bench --suite issue15_quant` under each (S 16384 / 65536 rows printed);
#   consumers: the FP8 attention's consumer count (QFUSE_VIT_TC_CONSUMERS 2, 3: 128 or 192 query
#      rows a block): the attention tests under each, then two interleaved rounds of
#      vit_attention/fp8:tc at D 72 S 4096 and 16384 and D 64 at S 16384; with .devbin_b.tgz
#      (another build), its tests and rows with 3 consumers in the same rounds;
#   b: with .devbin_b.tgz carried (another `make devbin`, e.g. of branch
#      wip/vit-quant-interleave, copied aside), its quantization tests and issue15_quant;
#   ncu: speed of light and memory of the static quantizer at S 16384: DRAM bytes against the
#      176 MB minimum.
#   device: bash scripts/ab_vit.sh   (carry .devbin.tgz [and .devbin_b.tgz]); logs in $OUT
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/qfuse-ab}
mkdir -p "$out"
export PATH=/usr/local/cuda/bin:$PATH
[ -x .devbin/qfuse ] || tar xzf .devbin.tgz
bin=.devbin
parts=${1:-quant consumers b ncu}
has_part() { case " $parts " in *" $1 "*) return 0 ;; esac; return 1; }
[ ! -f .devbin_b.tgz ] || [ -x B/.devbin/qfuse ] || { mkdir -p B && tar xzf .devbin_b.tgz -C B; }
quant_tests='Shapes/VitQuant*:VLayouts/*:VitDynamic*'

if has_part quant; then
  for f in ${AB_VIT_FORMS:-0 1 2 3 4 5 6 7}; do
    QFUSE_VIT_QUANT_FORM=$f timeout 60 $bin/test_vit_attention --gtest_brief=1 \
      --gtest_filter="$quant_tests" >"$out/tests_form$f.log" 2>&1
    echo "form $f: quantization tests exit $? ($(grep -c '\[  FAILED' "$out/tests_form$f.log") failed lines)"
  done
  for f in ${AB_VIT_FORMS:-0 1 2 3 4 5 6 7}; do
    QFUSE_VIT_QUANT_FORM=$f timeout 60 $bin/qfuse bench --suite issue15_quant \
      --json "$out/quant_form$f.json" >"$out/quant_form$f.txt" 2>&1
    echo "== form $f (routine shape us_median %copy)"
    grep -E '^vit_quant' "$out/quant_form$f.txt" | grep -E 'S=4096|S=16384|S=65536' | awk '{print "  " $1, $2, $5, $8}'
  done
fi

if has_part consumers; then
  builds="$bin:2 $bin:3"
  [ -x B/.devbin/qfuse ] && builds="$builds B/.devbin:3"
  for bc in $builds; do
    b=${bc%:*} c=${bc#*:}
    QFUSE_VIT_TC_CONSUMERS=$c timeout 90 $b/test_vit_attention --gtest_brief=1 \
      --gtest_filter='HeadDims/VitAttentionTc.*:HeadDims/VitAttention.*:VitLayer*' \
      >"$out/tests_${b//\//_}_$c.log" 2>&1
    echo "$b consumers $c: attention tests exit $? ($(grep -c '\[  FAILED' "$out/tests_${b//\//_}_$c.log") failed lines)"
  done
  for r in 1 2; do
    for bc in $builds; do
      b=${bc%:*} c=${bc#*:}
      for shape in "72 4096" "72 16384" "64 16384"; do
        set -- $shape
        QFUSE_VIT_TC_CONSUMERS=$c timeout 30 $b/qfuse bench --op vit_attention/fp8:tc --dim S=$2 \
          --dim H=16 --dim D=$1 --dim NIMG=1 2>&1 | grep -E '^vit_attention' |
          awk -v b=$b -v c=$c -v r=$r '{print "round " r " " b " consumers " c ": " $0}'
      done
    done
  done
fi

if has_part b && [ -x B/.devbin/qfuse ]; then
  timeout 60 B/.devbin/test_vit_attention --gtest_brief=1 --gtest_filter="$quant_tests" \
    >"$out/tests_b.log" 2>&1
  echo "build B: quantization tests exit $?"
  timeout 60 B/.devbin/qfuse bench --suite issue15_quant >"$out/quant_b.txt" 2>&1
  echo "== build B"
  grep -E '^vit_quant' "$out/quant_b.txt" | grep -E 'S=4096|S=16384|S=65536' | awk '{print "  " $1, $2, $5, $8}'
fi

if has_part ncu && command -v ncu >/dev/null; then
  for f in 0 5; do
    QFUSE_VIT_QUANT_FORM=$f timeout 90 ncu --kernel-name-base mangled -k regex:quant_kernelILb0 \
      -s 2 -c 1 --kill on --section SpeedOfLight --section MemoryWorkloadAnalysis \
      $bin/qfuse bench --op vit_quant/static --dim S=16384 --dim H=16 --dim D=72 --no-unfused \
      >"$out/ncu_quant_form$f.txt" 2>&1
    echo "== ncu, static quantizer, form $f"
    grep -E 'DRAM Throughput|Duration|Memory Throughput|L2 Hit Rate|Mem Busy|Max Bandwidth' \
      "$out/ncu_quant_form$f.txt" | sed 's/^ */  /'
  done
fi
