// Status: the error type of every qfuse entry point.
//
// A failed validation names the argument, the expected and the actual value:
//   "argument 'out.dtype': expected e4m3, got bf16".
#pragma once

#include <string>
#include <utility>

namespace qfuse {

enum class StatusCode { kOk, kInvalidArgument, kNotSupported, kCudaError, kInternal };

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }
  /// "argument '<arg>': expected <expected>, got <actual>"
  static Status InvalidArgument(const std::string& arg, const std::string& expected,
                                const std::string& actual);
  static Status NotSupported(std::string message) {
    return {StatusCode::kNotSupported, std::move(message)};
  }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  /// "ok" or "<code name>: <message>"
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

}  // namespace qfuse

#define QFUSE_RETURN_IF_ERROR(expr)                \
  do {                                             \
    ::qfuse::Status qfuse_status_ = (expr);        \
    if (!qfuse_status_.ok()) return qfuse_status_; \
  } while (0)
