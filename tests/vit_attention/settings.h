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

/// The BF16 tensor-core kernel's P buffers (vit::set_tc_bf16_pbuf): 1 or 2.
struct ForceBf16PBuf {
  explicit ForceBf16PBuf(int buffers) { vit::set_tc_bf16_pbuf(buffers); }
  ~ForceBf16PBuf() { vit::set_tc_bf16_pbuf(0); }
  ForceBf16PBuf(const ForceBf16PBuf&) = delete;
  ForceBf16PBuf& operator=(const ForceBf16PBuf&) = delete;
};

}  // namespace qfuse::test
