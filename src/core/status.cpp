#include "qfuse/core/status.h"

namespace qfuse {

Status Status::InvalidArgument(const std::string& arg, const std::string& expected,
                               const std::string& actual) {
  return {StatusCode::kInvalidArgument,
          "argument '" + arg + "': expected " + expected + ", got " + actual};
}

std::string Status::to_string() const {
  switch (code_) {
    case StatusCode::kOk:
      return "ok";
    case StatusCode::kInvalidArgument:
      return "invalid argument: " + message_;
    case StatusCode::kNotSupported:
      return "not supported: " + message_;
    case StatusCode::kCudaError:
      return "CUDA error: " + message_;
    case StatusCode::kInternal:
      return "internal error: " + message_;
  }
  return message_;
}

}  // namespace qfuse
