// The op registry: what every graph op reads, writes and accepts, how it fuses with a following
// `quantize`, and how the executor runs it (docs/graph.md).
//
// Built-in ops: gemm, and every kernel family's ops, which each family registers from its own
// folder (qfuse/graph/family.h; docs/families.md): an OpDef with its ports, attributes,
// shape/dtype inference, host and device runs, and how it fuses with a following quantize
// (FusionFamily; an attention op with a quantized epilogue uses kAttention). Outside code may
// add ops with OpRegistry::add() too.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qfuse/core/status.h"
#include "qfuse/core/tensor.h"
#include "qfuse/graph/graph.h"
#include "qfuse/quant/kind.h"

namespace qfuse::graph {

struct PortDef {
  std::string name;
  bool optional = false;
};

enum class AttrType { kString, kInt, kFloat, kQuant, kDType, kBool };

struct AttrDef {
  std::string name;
  AttrType type = AttrType::kString;
  std::vector<std::string> choices;  // kString: the accepted values (empty: any)
};

/// Which pass fuses an op with a following quantize (and which config flag gates it).
enum class FusionFamily {
  kNone,       // never fused with a following quantize
  kAct,        // silu_and_mul -> quant (fuse_act_quant)
  kMerge,      // merge_states -> quant (fuse_attn_quant)
  kAttention,  // attention ops with a quantized epilogue (fuse_attn_quant)
};

enum class OpClass { kQfuse, kGemm };

/// A host tensor: the bytes a device tensor of `desc` would hold, row-major, contiguous.
struct HostTensor {
  TensorDesc desc;
  std::vector<uint8_t> data;
};

struct HostRunArgs {
  const Node* node = nullptr;
  std::map<std::string, const HostTensor*> in;  // connected input ports
  std::map<std::string, HostTensor*> out;       // connected output ports, sized, desc set
};
struct DeviceRunArgs {
  const Node* node = nullptr;
  std::map<std::string, TensorRef> in;   // connected input ports (contiguous views)
  std::map<std::string, TensorRef> out;  // connected output ports
  void* scratch = nullptr;               // OpDef::scratch_bytes of the workspace (256-aligned)
  size_t scratch_bytes = 0;
};

/// Given the connected inputs, checks them and the attributes and returns the expected type of
/// every connected output port (names are filled in by the caller). Messages name the port or
/// attribute, e.g. "input 'x' (tensor 'h'): expected rank 2, got 3"; the caller prefixes the node.
using InferFn =
    std::function<Status(const Node& node, const std::map<std::string, const TensorDesc*>& in,
                         std::map<std::string, TensorDesc>* out)>;
using HostRunFn = std::function<Status(const HostRunArgs&)>;
using DeviceRunFn = std::function<Status(const DeviceRunArgs&, cudaStream_t)>;
/// Device scratch one run of the node needs, given its connected inputs and the multiprocessor
/// count of the device it runs on (0 when planned without a device: the op assumes 132).
using ScratchFn =
    std::function<Status(const Node& node, const std::map<std::string, const TensorDesc*>& in,
                         int sm_count, size_t* bytes)>;

struct OpDef {
  std::string name;
  std::string summary;
  OpClass cls = OpClass::kQfuse;
  std::vector<PortDef> inputs, outputs;
  std::vector<AttrDef> attrs;
  InferFn infer;

  // ---- fusion with a following quantize node ----
  FusionFamily fusion = FusionFamily::kNone;
  /// The output port a following quantize reads ("out").
  std::string fused_output_port = "out";
  /// The op the pair becomes: another op ("silu_mul_quant") or this op itself with its "quant"
  /// attribute set (merge_states, attention epilogues).
  std::string fused_quant_op;
  /// Whether the fused op writes `spec`. Empty: fused_output_quant_supported(fused_quant_op,
  /// spec) from the capability table (include/qfuse/quant/capabilities.h).
  std::function<bool(const QuantSpec&)> fused_quant_supported;

  // ---- execution ----
  /// Outputs written in place over an input (output port -> input port; the cache writer's
  /// cache): on the device the output is the input's storage, so the op writes only what it
  /// changes. The graph stays one writer per tensor (the output is a new name); validation
  /// requires that nothing else reads the input, which the op overwrites. The host path runs the
  /// op on a copy.
  std::map<std::string, std::string> in_place;
  HostRunFn host_run;       // the fp64/fp32 host reference (empty: no host path)
  DeviceRunFn device_run;   // the GPU path for kQfuse ops (GEMMs are run by the executor)
  ScratchFn scratch_bytes;  // device scratch of device_run, planned in the workspace (empty: none)

  /// True when this op takes the quantization of its output as a "quant" attribute.
  bool has_quant_attr() const;
  /// The capability query the passes use (see fused_quant_supported).
  bool supports_fused_quant(const QuantSpec& spec) const;
};

class OpRegistry {
 public:
  /// A registry holding the built-in ops: gemm and every registered family's ops
  /// (qfuse/graph/family.h).
  static OpRegistry with_builtins();

  /// Adds an op; an error when the name is taken or the definition is incomplete.
  Status add(OpDef def);
  const OpDef* find(const std::string& name) const;
  std::vector<std::string> names() const;
  /// The first error of the families' registration (with_builtins()); Ok normally.
  const Status& family_status() const { return family_status_; }

 private:
  std::map<std::string, std::shared_ptr<const OpDef>> ops_;
  Status family_status_ = Status::Ok();
};

/// The process-wide registry the graph functions use when given nullptr (built-ins; later
/// families add their ops to it at start-up).
OpRegistry& default_registry();

// ---- helpers shared by op definitions (also for ops registered outside the library) ----

/// "input 'x' (tensor 'h')" / "output 'out' (tensor 'y')"
std::string port_label(const Node& node, bool input, const std::string& port);

/// The spec of a node's "quant" attribute (none when unset); errors name the attribute.
Status node_quant_spec(const Node& node, QuantSpec* spec);

/// The outputs a producer writes through the shared quantizer: `out` ([rows, cols] values, or
/// [rows, cols/2] e2m1x2) and, for kinds that compute scales, `scales` (scale_shape()). Checks the
/// optional inputs `scale` (required for per-tensor and NVFP4) and `scale_ub` (dynamic FP8 only),
/// both [1] fp32, and that the output ports connected are exactly the ones the kind writes.
/// `none_dtype` is the dtype written for QuantSpec::none().
Status infer_quantized_output(const Node& node, const std::map<std::string, const TensorDesc*>& in,
                              const QuantSpec& spec, int64_t rows, int64_t cols, DType none_dtype,
                              std::map<std::string, TensorDesc>* out);

}  // namespace qfuse::graph
