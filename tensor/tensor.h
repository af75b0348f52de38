// Storage and Tensor: a tensor is a strided view (dtype, shape, strides in elements, byte offset)
// over a shared Storage. Views share storage; copies are explicit (contiguous(), clone(), to()).
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "tensor/dtype.h"
#include "tensor/error.h"

namespace tb {

using Shape = std::vector<int64_t>;

/** Bytes with an owner: heap memory, a memory-mapped file region, external memory kept alive by a
 *  handle, or bytes computed on first access (Deferred). Memory maps are private (copy-on-write), so
 *  writing through a tensor never changes the file. */
class Storage {
 public:
  /** Heap: aligned heap memory owned by the storage; Mapped: a file mapping; External: memory kept alive by a handle;
   *  Deferred: computed on first access. */
  enum class Kind { Heap, Mapped, External, Deferred };

  /** Allocates nbytes of heap memory, zero-filled when zero is true. */
  static std::shared_ptr<Storage> allocate(size_t nbytes, bool zero = true);
  /** Wraps memory owned elsewhere; keepalive is held as long as the storage lives. */
  static std::shared_ptr<Storage> wrap(void* data, size_t nbytes, std::shared_ptr<void> keepalive,
                                       Kind kind = Kind::External);

  /** nbytes computed by fill on the first data() (e.g. quantized blocks decoded to float32), for
   *  one-pass conversions: writers call release_deferred() once they wrote it, so only the tensor being
   *  written is held. Bytes written through data() are lost at a release: only for read-only use. */
  static std::shared_ptr<Storage> deferred(size_t nbytes, std::function<void(uint8_t*)> fill);

  /** Not copyable (shared through std::shared_ptr); the destructor frees owned heap bytes and drops
   *  the keepalive handle, which releases mapped or external memory. */
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();

  /** The bytes; a Deferred storage computes them on first call (thread-safe; fill's exceptions propagate). */
  uint8_t* data() const { return kind_ == Kind::Deferred ? computed() : data_; }
  /** A Deferred storage frees its computed bytes (the next data() computes them again); others: no-op. */
  void release_deferred() const;
  /** Size in bytes. */
  size_t nbytes() const { return nbytes_; }
  /** Where the bytes come from. */
  Kind kind() const { return kind_; }

  /** Where a Mapped storage's bytes lie in their file (an open descriptor kept alive by the storage),
   *  so writers can copy them in the kernel (copy_file_range) instead of through the mapping. */
  struct FileOrigin {
    std::shared_ptr<const int> fd;  // null: not known
    uint64_t offset = 0;            // file offset of data()
  };
  /** The file position of a Mapped storage's bytes; fd is null when unknown. */
  const FileOrigin& file_origin() const { return origin_; }
  /** Set by the mapping reader (tensor/io.cpp) when it creates the storage. */
  void set_file_origin(FileOrigin origin) { origin_ = std::move(origin); }

 private:
  /** Use the factories allocate(), wrap() and deferred(). */
  Storage() = default;
  /** Runs the Deferred fill once under the lock and keeps the bytes until release_deferred(). */
  uint8_t* computed() const;
  struct Deferral;  // fill function and its lock
  mutable uint8_t* data_ = nullptr;
  size_t nbytes_ = 0;
  Kind kind_ = Kind::Heap;
  bool owns_heap_ = false;
  std::shared_ptr<void> keepalive_;
  FileOrigin origin_;
  std::unique_ptr<Deferral> deferral_;
};

/** Product of dims with overflow and negative checks (throws ShapeError, its message starting
 *  with what, e.g. "[h5] 'f.h5': dataset 'w'", when given). */
int64_t checked_numel(const Shape& shape, std::string_view what = {});
/** Row-major strides (in elements) for a shape. */
Shape contiguous_strides(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[2, 3]"

/** A typed strided view (dtype, shape, strides in elements, byte offset) over a shared Storage; copying a
 *  Tensor shares the storage. */
class Tensor {
 public:
  Tensor() = default;  // undefined tensor

  /** A view of storage; throws ShapeError if any element would fall outside the storage. */
  Tensor(std::shared_ptr<Storage> storage, DType dtype, Shape shape, Shape strides, int64_t byte_offset = 0);

  /** New contiguous zero-filled tensor. */
  static Tensor zeros(DType dtype, Shape shape);
  /** New contiguous float32 tensor of standard-normal values from std::mt19937(seed) (tests, benchmarks). */
  static Tensor randn(Shape shape, uint32_t seed);
  /** New contiguous tensor from raw bytes (size must match). */
  static Tensor from_bytes(DType dtype, Shape shape, const void* bytes, size_t nbytes);
  /** New contiguous tensor from typed values; T must match dtype's element size. */
  template <class T>
  static Tensor from_vector(DType dtype, Shape shape, const std::vector<T>& values) {
    static_assert(std::is_trivially_copyable_v<T>);
    return from_bytes(dtype, std::move(shape), values.data(), values.size() * sizeof(T));
  }

  /** False for a default-constructed (undefined) tensor; most other members need a defined one. */
  bool defined() const { return storage_ != nullptr; }
  /** Element type. */
  DType dtype() const { return dtype_; }
  /** Dims, outermost first. */
  const Shape& shape() const { return shape_; }
  /** Per-dim step in elements (not bytes). */
  const Shape& strides() const { return strides_; }
  /** Rank (0 for a scalar). */
  int64_t dim() const { return int64_t(shape_.size()); }
  /** Element count (1 for a scalar, 0 when any dim is 0). */
  int64_t numel() const { return numel_; }
  /** Bytes per element. */
  size_t itemsize() const { return dtype_size(dtype_); }
  /** Bytes of the elements this tensor views (numel * itemsize), not of its storage. */
  size_t nbytes() const { return size_t(numel_) * itemsize(); }
  /** Bytes from the storage's start to the first element. */
  int64_t byte_offset() const { return byte_offset_; }
  /** The shared owner of the bytes (null when undefined). */
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  /** Pointer to the first element. */
  uint8_t* data() const { return storage_->data() + byte_offset_; }
  /** data() cast to T*; no dtype check. */
  template <class T>
  T* data_as() const {
    return reinterpret_cast<T*>(data());
  }

  /** Row-major contiguous (dims of size 1 may have any stride). */
  bool is_contiguous() const;
  /** Self when contiguous, otherwise a packed copy. */
  Tensor contiguous() const;
  /** Always a packed copy with its own storage. */
  Tensor clone() const;
  /** Converted copy (self when the dtype already matches). */
  Tensor to(DType dtype) const;
  /** Same data, new shape; requires a contiguous tensor with the same numel. */
  Tensor view(Shape shape) const;
  /** view() when contiguous, otherwise contiguous().view(). */
  Tensor reshape(Shape shape) const;
  /** View with dims reordered (output dim i is input dim dims[i]); ShapeError on a bad permutation. */
  Tensor permute(const std::vector<int64_t>& dims) const;
  /** View with dims d0 and d1 swapped (non-negative dims); ShapeError when out of range. */
  Tensor transpose(int64_t d0, int64_t d1) const;
  /** Python-style slice start:end:step along one dim (step > 0). */
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  /** Same data reinterpreted as another dtype of equal element size. */
  Tensor view_as_dtype(DType dtype) const;

  /** True when both views use the same Storage object (false if this is undefined). */
  bool shares_storage(const Tensor& other) const { return storage_ && storage_ == other.storage_; }
  /** [first, last) bytes of the storage this view can touch. */
  std::pair<int64_t, int64_t> storage_span() const;

  /** Copies the elements in row-major order into dst (nbytes() bytes). */
  void copy_to(void* dst) const;
  /** Copies row-major bytes from src into this view's elements. */
  void copy_from(const void* src);
  /** Contiguous typed copy; T's size must equal itemsize(). */
  template <class T>
  std::vector<T> to_vector() const {
    TB_CHECK(sizeof(T) == itemsize(), ShapeError, "to_vector: element size ", sizeof(T), " != ", itemsize(), " of ",
             dtype_name(dtype_));
    std::vector<T> out(static_cast<size_t>(numel_));
    copy_to(out.data());
    return out;
  }
  /** Element i (row-major) converted to double; complex gives the real part. */
  double item_as_double(int64_t i = 0) const;

  /** "float32[2, 3]" */
  std::string describe() const;

 private:
  std::shared_ptr<Storage> storage_;
  DType dtype_ = DType::F32;
  Shape shape_, strides_;
  int64_t byte_offset_ = 0;
  int64_t numel_ = 0;
};

/** Same dtype, shape and element bytes (bit-exact; NaNs with equal bits are equal). */
bool equal(const Tensor& a, const Tensor& b);
/** |a - b| <= atol + rtol * |b| elementwise, computed in double; shapes must match. NaN == NaN when equal_nan. */
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8, bool equal_nan = false);
/** Largest |a - b| over all elements (computed in double). */
double max_abs_diff(const Tensor& a, const Tensor& b);

}  // namespace tb
