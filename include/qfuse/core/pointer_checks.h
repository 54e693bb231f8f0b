// Where device memory is checked (SPEC §7): every op of the C++ API asks the driver, for each
// pointer of a call that will launch work, whether it is memory of the current device (device,
// managed or mapped host memory); cuPointerGetAttributes, a few hundred nanoseconds a pointer,
// which on a slow host adds up to microseconds for the ops with many tensors (bench/NOTES.md P2).
//
// A caller that has established the same facts itself may skip those queries: a framework
// binding whose tensors carry their device, each checked against the current device (qfuse's
// PyTorch op library does this: every CUDA tensor of the call on the device the op runs on), or
// an engine that allocates every buffer on one device. While a TrustedDevicePointers lives, the
// ops called on this thread skip the driver queries; every other check (dtypes, sizes, strides,
// alignment, null pointers where data is needed) runs as before. A pointer that is not what the
// caller vouched for then reaches the kernel unchecked.
#pragma once

namespace qfuse {

class TrustedDevicePointers {
 public:
  TrustedDevicePointers();
  ~TrustedDevicePointers();
  TrustedDevicePointers(const TrustedDevicePointers&) = delete;
  TrustedDevicePointers& operator=(const TrustedDevicePointers&) = delete;

 private:
  bool previous_;  // scopes nest: the state before this one, restored at its end
};

/// Whether a TrustedDevicePointers lives on this thread.
bool device_pointers_trusted();

}  // namespace qfuse
