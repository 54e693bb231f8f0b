// Argument checks the ViT attention entry points share (vit_attention.h).
#pragma once

#include <string>

#include "qfuse/core/status.h"
#include "qfuse/core/tensor.h"

namespace qfuse::vit {

/// `t` (named `name`) has q's dtype, rank and sizes, sizes that do not overflow, its last
/// dimension contiguous and no negative stride.
Status check_like_q(const TensorRef& t, const std::string& name, const TensorRef& q);

}  // namespace qfuse::vit
