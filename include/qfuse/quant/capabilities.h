// What each op supports, declared once by the family that implements it: the dispatchers' checks
// (can_implement), the fusion pass's capability query (`fused_output_quant_supported`) and
// `qfuse info` all read this table.
//
// Families register themselves (docs/families.md): every folder src/<family>/ with a
// family.cmake is built into the library, and its registration function
//   QFUSE_REGISTER_KERNEL_FAMILY(<family>) { r.add_family(...); r.add_op(...); }
// is called once when the table is first read. An op's output kinds are derived from how its
// kernels hand values to the quantizer (OutputDelivery) and what each kind needs (quant_needs).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "qfuse/core/dtype.h"
#include "qfuse/core/status.h"
#include "qfuse/quant/kind.h"

namespace qfuse {

/// How an op's kernels hand their output values to the quantizer, which decides the kinds it
/// can write (derive_output_specs).
struct OutputDelivery {
  bool plain = true;       // writes unquantized float output (QuantSpec::none())
  bool quantized = true;   // writes through the quantizer
  bool whole_rows = true;  // one kernel instance sees a whole output row (row-wise producers)
  int tile_cols = 0;       // else the columns of the tile one instance sees (a multiple of 16)
  // The kinds the op's kernels also write with the reference engine's rule (QuantRule::kEngine;
  // only kinds that have one). Empty for most ops: the drop-in ops need it.
  std::vector<QuantKind> engine_rule_kinds = {};
};

/// The specs of all_quant_specs() that an op delivering values this way can write: plain when
/// `plain`; a given per-tensor scale always; a group of g columns when whole rows are seen or
/// tile_cols % g == 0; a row scale only with whole rows. Then, in the same order, the engine-rule
/// form of those whose kind is in `engine_rule_kinds`.
std::vector<QuantSpec> derive_output_specs(const OutputDelivery& d);

struct OpCapability {
  std::string op;       // "quantize", "silu_and_mul", "silu_mul_quant", ...
  std::string family;   // the registering family
  std::string summary;  // one line for `qfuse info`
  std::vector<DType> input_dtypes;
  OutputDelivery delivery;
  std::vector<QuantSpec> output_specs;  // derived from `delivery` by add_op()
};

struct FamilyInfo {
  std::string name;     // the folder name: act_quant, merge_states, ...
  std::string summary;  // one line
};

/// The table the families fill.
class KernelRegistry {
 public:
  void add_family(FamilyInfo family);
  /// Adds an op of an added family; derives its output specs. An error for a duplicate op, an
  /// unknown family or a delivery that writes nothing.
  Status add_op(OpCapability op);
  const std::vector<FamilyInfo>& families() const { return families_; }
  const std::vector<OpCapability>& ops() const { return ops_; }
  /// The first error of add_op (a registration bug; tests check it is Ok).
  const Status& status() const { return status_; }

 private:
  Status add_op_checked(OpCapability op);
  std::vector<FamilyInfo> families_;
  std::vector<OpCapability> ops_;
  Status status_ = Status::Ok();
};

/// The process-wide table: every family's registration, run once (thread-safe).
const KernelRegistry& kernel_registry();

/// Every registered family and op, in registration order (families sorted by name).
const std::vector<FamilyInfo>& registered_families();
const std::vector<OpCapability>& op_capabilities();
/// nullptr for an unknown op.
const OpCapability* find_op_capability(std::string_view op);
/// True when `op` can write its output as `spec` (false for unknown ops).
bool fused_output_quant_supported(std::string_view op, const QuantSpec& spec);

namespace detail {
/// Called by kernel_registry(): the registration functions of every family (generated).
void register_kernel_families(KernelRegistry& r);
}  // namespace detail

}  // namespace qfuse

/// Defines the kernel-level registration function of a family (one per src/<family>/).
#define QFUSE_REGISTER_KERNEL_FAMILY(name) \
  void qfuse_register_kernels_##name(::qfuse::KernelRegistry& r)
