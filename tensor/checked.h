// Overflow-checked integer arithmetic for every size, stride, offset and element count that comes
// from a file. Each function either returns the exact result or throws ShapeError naming what was
// being computed ("element count of 'w'", "byte offset of member 'x'"), so a hostile header can
// never wrap a computation into a small, wrong number.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>
#include <type_traits>

#include "tensor/error.h"

namespace tb {

namespace detail {
template <class T>
[[noreturn]] void throw_overflow(std::string_view what, const char* op, T a, T b) {
  throw ShapeError(str(what, " overflows ", sizeof(T) * 8, " bits (", +a, " ", op, " ", +b, ")"));
}

/** The three checked operations, one compiler builtin each. */
enum class Op { Add, Sub, Mul };

/** a op b; throws ShapeError "<what> overflows" when the exact result does not fit in T. */
template <Op op, class T>
T checked_op(T a, T b, std::string_view what) {
  static_assert(std::is_integral_v<T>);
  T r;
  bool overflow;
  if constexpr (op == Op::Add)
    overflow = __builtin_add_overflow(a, b, &r);
  else if constexpr (op == Op::Sub)
    overflow = __builtin_sub_overflow(a, b, &r);
  else
    overflow = __builtin_mul_overflow(a, b, &r);
  if (overflow) throw_overflow(what, op == Op::Add ? "+" : op == Op::Sub ? "-" : "*", a, b);
  return r;
}
}  // namespace detail

/** a * b; throws ShapeError "<what> overflows" when the product does not fit in T. */
template <class T>
T checked_mul(T a, T b, std::string_view what) {
  return detail::checked_op<detail::Op::Mul>(a, b, what);
}

/** a + b; throws ShapeError "<what> overflows" when the sum does not fit in T. */
template <class T>
T checked_add(T a, T b, std::string_view what) {
  return detail::checked_op<detail::Op::Add>(a, b, what);
}

/** a - b; throws ShapeError when the difference does not fit in T (for unsigned T: when b > a). */
template <class T>
T checked_sub(T a, T b, std::string_view what) {
  return detail::checked_op<detail::Op::Sub>(a, b, what);
}

/** v converted to To; throws ShapeError when v is outside To's range (a uint64 header field that
 *  does not fit an int64 size, a negative count meant as size_t). */
template <class To, class From>
To checked_cast(From v, std::string_view what) {
  static_assert(std::is_integral_v<To> && std::is_integral_v<From>);
  To r;
  if (__builtin_add_overflow(v, From(0), &r))
    throw ShapeError(str(what, " is out of range: ", +v, " is not within [", +std::numeric_limits<To>::min(), ", ",
                         +std::numeric_limits<To>::max(), "]"));
  return r;
}

/** Bytes of numel elements of itemsize bytes, as a size that also fits in int64 (the type of byte
 *  offsets); throws ShapeError naming what otherwise. */
inline size_t checked_nbytes(int64_t numel, size_t itemsize, std::string_view what) {
  int64_t n = checked_mul(numel, checked_cast<int64_t>(itemsize, what), what);
  return checked_cast<size_t>(n, what);
}

}  // namespace tb
