// Fusion passes (SPEC §6): a producer followed by a standalone `quantize` becomes the producer's
// fused variant, only where the capability query says the fused op writes that kind.
//
//   fuse_act_quant:   silu_and_mul -> quantize  =>  silu_mul_quant            (flag fuse_act_quant)
//   fuse_merge_quant: merge_states -> quantize  =>  merge_states{quant=spec}  (flag
//   fuse_attn_quant) fuse_attn_quant:  <attention op> -> quantize => the op with its quantized
//   epilogue
//                     (any op registered with FusionFamily::kAttention)      (flag fuse_attn_quant)
//
// A match is a producer of the pass's family (with no quantized output yet) whose fused output
// is read by a quantize node's input 'x'. It is replaced unless the flag is off, the
// intermediate has another reader or is a graph output, or the capability query says no; each
// skipped match is reported with the reason. The graph is validated after every pass.
#pragma once

#include <string>
#include <vector>

#include "qfuse/core/status.h"
#include "qfuse/graph/config.h"
#include "qfuse/graph/graph.h"

namespace qfuse::graph {

class OpRegistry;

struct PassReport {
  struct Skip {
    std::string node;    // the producer
    std::string reason;  // why it stayed unfused
  };
  std::string name;
  int matched = 0;
  int replaced = 0;
  std::vector<Skip> skipped;

  /// "fuse_act_quant: matched 2, replaced 1; skipped 'act2': intermediate 'y2' is also read by ..."
  std::string to_string() const;
};

/// Runs one pass by name (fuse_act_quant, fuse_merge_quant, fuse_attn_quant). The graph must be
/// valid; it is validated again afterwards (an internal error if a pass broke it).
Status run_pass(const std::string& pass, const FusionConfig& config, Graph* g, PassReport* report,
                const OpRegistry* registry = nullptr);

/// All passes in order; appends one report per pass.
Status run_fusion_passes(const FusionConfig& config, Graph* g, std::vector<PassReport>* reports,
                         const OpRegistry* registry = nullptr);

/// The pass names, in the order run_fusion_passes() runs them.
const std::vector<std::string>& pass_names();

}  // namespace qfuse::graph
