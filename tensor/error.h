// Error hierarchy shared by every layer.
//
//   Error              base; what() is the full message including context lines
//   ├─ FormatError     malformed input (bad magic, truncated, inconsistent header)
//   ├─ UnsupportedError valid input we do not handle (dtype, feature, build option off)
//   ├─ UnsafeError     a file asks to execute code (pickle global outside the allow list)
//   ├─ IoError         open/read/write/rename failed
//   ├─ KeyError        missing, duplicate or unexpected key
//   ├─ ShapeError      shape/dtype mismatch
//   └─ BackendError    compute backend failure (Vulkan)
// InternalError is thrown by TB_ASSERT: a bug of ours, never a user's input.
//
// Input checks use TB_CHECK(cond, FormatError, "expected ", x, " but found ", y).
// Messages name the file (Reader::label()), the key, what was expected and what was found.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace tb {

/** Concatenates any streamable values into one string. */
template <class... Args>
std::string str(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

/** Base of every tensorbridge error; the message grows with add_context() as it travels up. */
class Error : public std::runtime_error {
 public:
  /** msg is the message what() returns (before any context). */
  explicit Error(const std::string& msg) : std::runtime_error(msg), msg_(msg) {}
  /** The message with every added context line. */
  const char* what() const noexcept override { return msg_.c_str(); }
  /** Appends "while ..." context as the error travels up. */
  void add_context(const std::string& ctx) { msg_ += "\n  " + ctx; }
  /** The first line only (without added context). */
  std::string message() const { return msg_.substr(0, msg_.find('\n')); }

 private:
  std::string msg_;
};

/** The error kinds of the hierarchy in the file comment: each an Error with its own type to catch. */
#define TB_DEFINE_ERROR(Name) \
  class Name : public Error { \
   public:                    \
    using Error::Error;       \
  };
TB_DEFINE_ERROR(FormatError)
TB_DEFINE_ERROR(UnsupportedError)
TB_DEFINE_ERROR(UnsafeError)
TB_DEFINE_ERROR(IoError)
TB_DEFINE_ERROR(KeyError)
TB_DEFINE_ERROR(ShapeError)
TB_DEFINE_ERROR(BackendError)
TB_DEFINE_ERROR(InternalError)
// Memory ran out for something the load budget allowed (the machine has less than the budget): not
// a fault of the input. The CLI exits 2 on it.
TB_DEFINE_ERROR(OutOfMemoryError)
#undef TB_DEFINE_ERROR

}  // namespace tb

/** Checks user input; throws ErrorType with the concatenated message when cond is false. */
#define TB_CHECK(cond, ErrorType, ...)                    \
  do {                                                    \
    if (!(cond)) throw ErrorType(::tb::str(__VA_ARGS__)); \
  } while (0)

/** Checks an internal invariant; always on. */
#define TB_ASSERT(cond, ...)                                                                               \
  do {                                                                                                     \
    if (!(cond))                                                                                           \
      throw ::tb::InternalError(::tb::str("internal error at ", __FILE__, ":", __LINE__, ": ", #cond, " ", \
                                          ##__VA_ARGS__, " (please report)"));                             \
  } while (0)
