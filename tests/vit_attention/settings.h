// Process-wide settings of the ViT tensor-core kernels (vit_attention/launch.h) forced for one
// test, the defaults restored after.
#pragma once

#include "vit_attention/launch.h"

namespace qfuse::test {

/// The FP8 tensor-core kernel's consumer count (vit::set_tc_consumers).
struct ForceTcConsumers {
  explicit ForceTcConsumers(int consumers) { vit::set_tc_consumers(consumers); }
  ~ForceTcConsumers() { vit::set_tc_consumers(0); }
  ForceTcConsumers(const ForceTcConsumers&) = delete;
  ForceTcConsumers& operator=(const ForceTcConsumers&) = delete;
};

/// The stream-K setting (vit::set_tc_streamk): -1 off, n > 0 a grid of at most n blocks.
struct ForceStreamK {
  explicit ForceStreamK(int mode) { vit::set_tc_streamk(mode); }
  ~ForceStreamK() { vit::set_tc_streamk(0); }
  ForceStreamK(const ForceStreamK&) = delete;
  ForceStreamK& operator=(const ForceStreamK&) = delete;
};

/// The layer's Q quantization in the attention kernel (vit::set_fused_q): 0 off, 1 on.
struct ForceFusedQ {
  explicit ForceFusedQ(int on) { vit::set_fused_q(on); }
  ~ForceFusedQ() { vit::set_fused_q(-1); }
  ForceFusedQ(const ForceFusedQ&) = delete;
  ForceFusedQ& operator=(const ForceFusedQ&) = delete;
};

}  // namespace qfuse::test
