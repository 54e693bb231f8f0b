// How qfuse launches kernels: programmatic dependent launch (PDL, sm_90+).
//
// With PDL on, a qfuse kernel may be scheduled while the previous kernel in the stream is still
// finishing; before its first global memory access it waits (griddepcontrol.wait) until that
// kernel has completed and its writes are visible, so no global memory is touched early. Most
// kernels wait at their first instruction; the merge's waits after its address arithmetic. Each
// qfuse kernel also lets its own dependents launch early. What is saved is the launch latency
// between back-to-back kernels (about a microsecond on H100), which dominates small decode batches.
// It is safe with any previous kernel, also under CUDA-graph capture. On by default; QFUSE_PDL=0 in
// the environment or set_pdl_enabled(false) turns it off.
#pragma once

namespace qfuse {

void set_pdl_enabled(bool enabled);
bool pdl_enabled();

}  // namespace qfuse
