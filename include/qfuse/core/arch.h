// What the current device can do, as capability checks rather than architecture names.
#pragma once

#include <string>

#include "qfuse/core/status.h"

namespace qfuse {

struct DeviceInfo {
  int device = -1;
  std::string name;
  int cc_major = 0;
  int cc_minor = 0;
  int sm_count = 0;
  int l2_bytes = 0;
  int max_threads_per_sm = 0;
  /// Hardware FP8 E4M3 conversion (cvt.*.e4m3x2.f32): compute capability >= 8.9.
  bool has_fp8_convert = false;
};

/// True when a CUDA device is present and usable.
bool gpu_available();
/// Properties of the current device (cached per device).
Status current_device_info(DeviceInfo* info);

}  // namespace qfuse
