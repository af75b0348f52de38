#include "tensor/tensor.h"

#include "tensor/checked.h"
#include "tensor/limits.h"

#include <sys/mman.h>
#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <random>

namespace tb {

// ---------------------------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------------------------
namespace {
/** nbytes (at least one) of heap memory, 64-byte aligned; buffers of 4 MiB and more are 2 MiB-aligned
 *  and marked for transparent huge pages, so filling them costs one page fault per 2 MiB instead of
 *  per 4 KiB (page faults dominated loading into owned memory; see docs/PERFORMANCE.md). Freed with
 *  std::free like any aligned_alloc block. */
uint8_t* heap_bytes(size_t nbytes, bool zero) {
  size_t padded = (std::max<size_t>(nbytes, 1) + 63) / 64 * 64;
  constexpr size_t kHuge = size_t(2) << 20;
  const bool huge = padded >= 2 * kHuge;
  if (huge) padded = (padded + kHuge - 1) / kHuge * kHuge;
  void* p = std::aligned_alloc(huge ? kHuge : 64, padded);
#ifdef MADV_HUGEPAGE
  if (huge && p) ::madvise(p, padded, MADV_HUGEPAGE);  // advisory: failure only costs speed
#endif
  TB_CHECK(p != nullptr, OutOfMemoryError, "out of memory: cannot allocate ", human_size(nbytes), " (", nbytes,
           " bytes)");
  if (zero) std::memset(p, 0, padded);
  return static_cast<uint8_t*>(p);
}
}  // namespace

struct Storage::Deferral {
  std::function<void(uint8_t*)> fill;
  std::mutex lock;  // one thread computes; data() from several threads is safe
};

std::shared_ptr<Storage> Storage::allocate(size_t nbytes, bool zero) {
  std::shared_ptr<Storage> s(new Storage());
  s->data_ = heap_bytes(nbytes, zero);
  s->nbytes_ = nbytes;
  s->kind_ = Kind::Heap;
  s->owns_heap_ = true;
  return s;
}

std::shared_ptr<Storage> Storage::deferred(size_t nbytes, std::function<void(uint8_t*)> fill) {
  std::shared_ptr<Storage> s(new Storage());
  s->nbytes_ = nbytes;
  s->kind_ = Kind::Deferred;
  s->owns_heap_ = true;
  s->deferral_ = std::make_unique<Deferral>();
  s->deferral_->fill = std::move(fill);
  return s;
}

uint8_t* Storage::computed() const {
  std::lock_guard<std::mutex> g(deferral_->lock);
  if (!data_) {
    uint8_t* p = heap_bytes(nbytes_, false);
    try {
      deferral_->fill(p);
    } catch (...) {
      std::free(p);
      throw;
    }
    data_ = p;
  }
  return data_;
}

void Storage::release_deferred() const {
  if (kind_ != Kind::Deferred) return;
  std::lock_guard<std::mutex> g(deferral_->lock);
  std::free(data_);
  data_ = nullptr;
}

std::shared_ptr<Storage> Storage::wrap(void* data, size_t nbytes, std::shared_ptr<void> keepalive, Kind kind) {
  std::shared_ptr<Storage> s(new Storage());
  s->data_ = static_cast<uint8_t*>(data);
  s->nbytes_ = nbytes;
  s->kind_ = kind;
  s->keepalive_ = std::move(keepalive);
  return s;
}

Storage::~Storage() {
  if (owns_heap_) std::free(data_);
}

// ---------------------------------------------------------------------------------------------
// Shape helpers
// ---------------------------------------------------------------------------------------------
int64_t checked_numel(const Shape& shape, std::string_view what) {
  // Fast path without building any message (called for every tensor made); the checked loop
  // below runs only when something is wrong, to name it.
  int64_t fast = 1;
  bool ok = true;
  for (int64_t d : shape) ok = ok && d >= 0 && !__builtin_mul_overflow(fast, d, &fast);
  if (ok) return fast;
  const auto prefix = [&] { return what.empty() ? std::string() : str(what, ": "); };
  for (int64_t d : shape)
    TB_CHECK(d >= 0, ShapeError, prefix(), "negative dimension ", d, " in shape ", shape_str(shape));
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d == 0) return 0;  // [0, 2^40, 2^40] holds nothing and must not overflow on the way
    n = checked_mul(n, d, str(prefix(), "the element count of shape ", shape_str(shape)));
  }
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape s(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    s[i] = acc;
    // A shape with a zero dimension holds nothing, yet its other dimensions still multiply here:
    // [0, 2^40, 2^40] from a hostile header must be an error, not a signed overflow.
    if (i > 0 && __builtin_mul_overflow(acc, std::max<int64_t>(shape[i], 1), &acc))
      throw ShapeError(str("shape ", shape_str(shape), " has strides that do not fit in 64 bits"));
  }
  return s;
}

std::string shape_str(const Shape& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

// ---------------------------------------------------------------------------------------------
// Tensor
// ---------------------------------------------------------------------------------------------
Tensor::Tensor(std::shared_ptr<Storage> storage, DType dtype, Shape shape, Shape strides, int64_t byte_offset)
    : storage_(std::move(storage)),
      dtype_(dtype),
      shape_(std::move(shape)),
      strides_(std::move(strides)),
      byte_offset_(byte_offset) {
  TB_ASSERT(storage_ != nullptr, "tensor without storage");
  TB_CHECK(shape_.size() == strides_.size(), ShapeError, "shape ", shape_str(shape_), " and strides ",
           shape_str(strides_), " differ in rank");
  TB_CHECK(shape_.size() <= 64, ShapeError, "rank ", shape_.size(), " exceeds the limit of 64");
  numel_ = checked_numel(shape_);
  if (int64_t nb = 0; __builtin_mul_overflow(numel_, int64_t(itemsize()), &nb))  // message built on failure only
    checked_nbytes(numel_, itemsize(), str("the byte size of ", dtype_name(dtype_), shape_str(shape_)));
  TB_CHECK(byte_offset_ >= 0, ShapeError, "negative byte offset ", byte_offset_);
  for (int64_t s : strides_) TB_CHECK(s >= 0, ShapeError, "negative stride in ", shape_str(strides_));
  auto [lo, hi] = storage_span();
  TB_CHECK(lo >= 0 && uint64_t(hi) <= storage_->nbytes(), ShapeError, dtype_name(dtype_), shape_str(shape_),
           " with strides ", shape_str(strides_), " at byte offset ", byte_offset_, " needs bytes up to ", hi,
           " but its storage has ", storage_->nbytes());
}

std::pair<int64_t, int64_t> Tensor::storage_span() const {
  if (numel_ == 0) return {byte_offset_, byte_offset_};
  // Every product and sum is checked: a hostile shape/stride pair such as (2^62+1,)/(2^62,) must be
  // an error, not a wrapped small span that passes the storage-size check.
  const auto what = [&] {
    return str("the storage span of ", dtype_name(dtype_), shape_str(shape_), " with strides ", shape_str(strides_),
               " at byte offset ", byte_offset_);
  };
  int64_t last = 0;  // element index of the last element reached
  for (size_t i = 0; i < shape_.size(); ++i) {
    int64_t step = 0, sum = 0;
    if (__builtin_mul_overflow(shape_[i] - 1, strides_[i], &step) || __builtin_add_overflow(last, step, &sum))
      throw ShapeError(str(what(), " overflows 64 bits"));
    last = sum;
  }
  // what() is built only on failure: this runs for every tensor made.
  int64_t elems = 0, bytes = 0, end = 0;
  if (__builtin_add_overflow(last, int64_t(1), &elems)) detail::throw_overflow(what(), "+", last, int64_t(1));
  if (__builtin_mul_overflow(elems, int64_t(itemsize()), &bytes))
    detail::throw_overflow(what(), "*", elems, int64_t(itemsize()));
  if (__builtin_add_overflow(byte_offset_, bytes, &end)) detail::throw_overflow(what(), "+", byte_offset_, bytes);
  return {byte_offset_, end};
}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  const size_t nbytes = checked_nbytes(checked_numel(shape), dtype_size(dtype),
                                       str("the byte size of ", dtype_name(dtype), shape_str(shape)));
  auto strides = contiguous_strides(shape);
  return Tensor(Storage::allocate(nbytes), dtype, std::move(shape), std::move(strides));
}

Tensor Tensor::randn(Shape shape, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(size_t(checked_numel(shape)));
  for (auto& x : v) x = d(gen);
  return from_vector(DType::F32, std::move(shape), v);
}

Tensor Tensor::from_bytes(DType dtype, Shape shape, const void* bytes, size_t nbytes) {
  Tensor t = zeros(dtype, std::move(shape));
  TB_CHECK(nbytes == t.nbytes(), ShapeError, "from_bytes: ", t.describe(), " needs ", t.nbytes(), " bytes, got ",
           nbytes);
  if (nbytes) std::memcpy(t.data(), bytes, nbytes);
  return t;
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = shape_.size(); i-- > 0;) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expected) return numel_ == 0;
    expected *= shape_[i];
  }
  return true;
}

namespace {
// Walks a strided view in row-major order, calling fn(byte_offset_in_storage_from_view_start, run_bytes)
// for each contiguous run. Trailing dims that are contiguous are merged into one run.
template <class Fn>
void for_each_run(const Shape& shape, const Shape& strides, size_t itemsize, Fn&& fn) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (numel == 0) return;
  // Merge innermost dims into one run while they are packed.
  size_t nd = shape.size();
  int64_t run = 1;  // elements
  size_t k = nd;
  while (k > 0) {
    int64_t d = shape[k - 1];
    if (d == 1) {
      --k;
      continue;
    }
    if (strides[k - 1] != run) break;
    run *= d;
    --k;
  }
  // dims [0, k) are iterated; run elements are contiguous.
  std::vector<int64_t> idx(k, 0);
  const size_t run_bytes = size_t(run) * itemsize;
  int64_t off = 0;  // in elements
  while (true) {
    fn(off * int64_t(itemsize), run_bytes);
    size_t j = k;
    while (j > 0) {
      --j;
      if (++idx[j] < shape[j]) {
        off += strides[j];
        break;
      }
      off -= strides[j] * (shape[j] - 1);
      idx[j] = 0;
      if (j == 0) return;
    }
    if (k == 0) return;
  }
}
}  // namespace

void Tensor::copy_to(void* dst) const {
  auto* out = static_cast<uint8_t*>(dst);
  const uint8_t* base = data();
  if (is_contiguous()) {
    if (nbytes()) std::memcpy(out, base, nbytes());
    return;
  }
  for_each_run(shape_, strides_, itemsize(), [&](int64_t off, size_t n) {
    std::memcpy(out, base + off, n);
    out += n;
  });
}

void Tensor::copy_from(const void* src) {
  const auto* in = static_cast<const uint8_t*>(src);
  uint8_t* base = data();
  if (is_contiguous()) {
    if (nbytes()) std::memcpy(base, in, nbytes());
    return;
  }
  for_each_run(shape_, strides_, itemsize(), [&](int64_t off, size_t n) {
    std::memcpy(base + off, in, n);
    in += n;
  });
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  TB_ASSERT(defined(), "clone of undefined tensor");
  Tensor t = zeros(dtype_, shape_);
  copy_to(t.data());
  return t;
}

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor src = contiguous();
  Tensor t = zeros(dtype, shape_);
  cast_elements(src.data(), dtype_, t.data(), dtype, size_t(numel_));
  return t;
}

Tensor Tensor::view(Shape shape) const {
  TB_CHECK(is_contiguous(), ShapeError, "view of a non-contiguous ", describe(), "; use reshape()");
  int64_t n = checked_numel(shape);
  TB_CHECK(n == numel_, ShapeError, "cannot view ", describe(), " as ", shape_str(shape), " (", n, " elements)");
  auto strides = contiguous_strides(shape);
  return Tensor(storage_, dtype_, std::move(shape), std::move(strides), byte_offset_);
}

Tensor Tensor::reshape(Shape shape) const { return contiguous().view(std::move(shape)); }

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  TB_CHECK(dims.size() == shape_.size(), ShapeError, "permute of ", describe(), " needs ", shape_.size(), " dims");
  Shape s(dims.size()), st(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = dims[i];
    TB_CHECK(d >= 0 && size_t(d) < dims.size() && !seen[size_t(d)], ShapeError, "permute: bad dims");
    seen[size_t(d)] = true;
    s[i] = shape_[size_t(d)];
    st[i] = strides_[size_t(d)];
  }
  return Tensor(storage_, dtype_, std::move(s), std::move(st), byte_offset_);
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  std::vector<int64_t> dims(shape_.size());
  for (size_t i = 0; i < dims.size(); ++i) dims[i] = int64_t(i);
  TB_CHECK(d0 >= 0 && d0 < dim() && d1 >= 0 && d1 < dim(), ShapeError, "transpose: dims out of range for ", describe());
  std::swap(dims[size_t(d0)], dims[size_t(d1)]);
  return permute(dims);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  TB_CHECK(d >= 0 && d < dim(), ShapeError, "slice: dim ", d, " out of range for ", describe());
  TB_CHECK(step > 0, ShapeError, "slice: step must be positive");
  int64_t n = shape_[size_t(d)];
  start = std::clamp<int64_t>(start < 0 ? start + n : start, 0, n);
  end = std::clamp<int64_t>(end < 0 ? end + n : end, 0, n);
  int64_t len = end > start ? (end - start + step - 1) / step : 0;
  Shape s = shape_, st = strides_;
  s[size_t(d)] = len;
  st[size_t(d)] = strides_[size_t(d)] * step;
  int64_t off = byte_offset_ + (len ? start * strides_[size_t(d)] * int64_t(itemsize()) : 0);
  return Tensor(storage_, dtype_, std::move(s), std::move(st), off);
}

Tensor Tensor::view_as_dtype(DType dtype) const {
  TB_CHECK(dtype_size(dtype) == itemsize(), ShapeError, "cannot reinterpret ", describe(), " as ", dtype_name(dtype));
  return Tensor(storage_, dtype, shape_, strides_, byte_offset_);
}

double Tensor::item_as_double(int64_t i) const {
  TB_CHECK(i >= 0 && i < numel_, ShapeError, "item ", i, " out of range for ", describe());
  // Locate element i in row-major order.
  int64_t off = 0, rem = i;
  for (size_t k = shape_.size(); k-- > 0;) {
    off += (rem % shape_[k]) * strides_[k];
    rem /= shape_[k];
  }
  const uint8_t* p = data() + off * int64_t(itemsize());
  if (is_complex(dtype_)) {
    double v;
    if (dtype_ == DType::C64) {
      float f;
      std::memcpy(&f, p, 4);
      v = f;
    } else {
      std::memcpy(&v, p, 8);
    }
    return v;
  }
  double out;
  cast_elements(p, dtype_, &out, DType::F64, 1);
  return out;
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return str(dtype_name(dtype_), shape_str(shape_));
}

bool equal(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  Tensor ca = a.contiguous(), cb = b.contiguous();
  return a.nbytes() == 0 || std::memcmp(ca.data(), cb.data(), a.nbytes()) == 0;
}

namespace {
// Both tensors as f64 (complex: interleaved real, imag as two f64 values).
std::vector<double> as_doubles(const Tensor& t) {
  Tensor c = t.contiguous();
  if (is_complex(t.dtype())) {
    Tensor f = c.to(DType::C128);
    std::vector<double> out(size_t(t.numel()) * 2);
    std::memcpy(out.data(), f.data(), out.size() * 8);
    return out;
  }
  std::vector<double> out(size_t(t.numel()));
  cast_elements(c.data(), t.dtype(), out.data(), DType::F64, out.size());
  return out;
}
}  // namespace

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol, bool equal_nan) {
  if (a.shape() != b.shape()) return false;
  auto x = as_doubles(a), y = as_doubles(b);
  if (x.size() != y.size()) return false;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i]) || std::isnan(y[i])) {
      if (!(equal_nan && std::isnan(x[i]) && std::isnan(y[i]))) return false;
      continue;
    }
    if (x[i] == y[i]) continue;  // also equal infinities
    if (!(std::fabs(x[i] - y[i]) <= atol + rtol * std::fabs(y[i]))) return false;
  }
  return true;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  TB_CHECK(a.shape() == b.shape(), ShapeError, "max_abs_diff: ", a.describe(), " vs ", b.describe());
  auto x = as_doubles(a), y = as_doubles(b);
  TB_CHECK(x.size() == y.size(), ShapeError, "max_abs_diff: complex vs real");
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] == y[i]) continue;
    double d = std::fabs(x[i] - y[i]);
    if (std::isnan(d)) return std::numeric_limits<double>::quiet_NaN();
    m = std::max(m, d);
  }
  return m;
}

}  // namespace tb
