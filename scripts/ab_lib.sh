# Shared by the A/B device scripts (ab_pending.sh, gpu_quick.sh, gpu_ab.sh); source it.
# engine_rows QFUSE DIR TAG: the engine-rule SiLU T 16 rows (issue 17's last row, in no suite) of
# one binary into DIR/eng<H>_<TAG>.json, TAG being <variant>_<round> for scripts/ab_medians.py.
engine_rows() {
  local H
  for H in 2048 7168; do
    timeout 20 "$1" bench --op silu_mul_quant --quant fp8_group128:row:f32:engine --dim T=16 \
      --dim H=$H --no-unfused --json "$2/eng${H}_$3.json" >/dev/null 2>&1
  done
}
