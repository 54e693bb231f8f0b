#include "qfuse/core/launch.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace qfuse {
namespace {

std::atomic<int>& pdl_state() {
  static std::atomic<int> state{[] {
    const char* env = std::getenv("QFUSE_PDL");
    return (env != nullptr && std::strcmp(env, "0") == 0) ? 0 : 1;
  }()};
  return state;
}

}  // namespace

void set_pdl_enabled(bool enabled) {
  pdl_state().store(enabled ? 1 : 0);
}
bool pdl_enabled() {
  return pdl_state().load() != 0;
}

}  // namespace qfuse
