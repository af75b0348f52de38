// NumPy .npy arrays and .npz archives.
//
// .npy layout (numpy/lib/format.py):
//  1. Magic "\x93NUMPY", major u8, minor u8: (1,0) header length u16 LE; (2,0) u32 LE; (3,0) u32 LE and
//     the header text is UTF-8 (latin1 before).
//  2. Header: a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded
//     with spaces and ended by '\n' so the data starts at a multiple of 64 (16 before NumPy 1.14; never
//     relied on). Parsed here as the literal it is (quotes, spaces, trailing commas, Python 2 `3L`).
//  3. Data: prod(shape) * itemsize raw bytes in descr's byte order ('<', '>', '|'), C order, or column
//     major when fortran_order is True (kept as a strided view, no copy). Object arrays ('|O') hold a
//     pickle of the array instead, read by the shared pickle VM (nothing is imported or called).
//
// .npz: a zip archive (formats/detail/zip.h) of members "<key>.npy"; np.savez stores them, savez_compressed
// deflates them. Keys may contain dots and slashes.
//
// Dtypes NumPy lacks (bfloat16, float8_e4m3fn, float8_e5m2) are written as their raw bits ('<u2', '|u1'),
// which numpy reads as unsigned integers, and the real dtype is recorded as a Python comment after the
// header dict: `{'descr': '<u2', ...} # tensorbridge:dtype=bfloat16`. numpy ignores the comment
// (ast.literal_eval), our reader restores the dtype, so our own round trips are exact.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "formats/format.h"

namespace tb {

/** A parsed .npy header. */
struct NpyHeader {
  int major = 1, minor = 0;
  std::string descr;         // as written ("<f4", "|O")
  bool object = false;       // '|O': the data is a pickle
  DType dtype = DType::F32;  // numeric arrays only
  bool big_endian = false;
  bool fortran_order = false;
  Shape shape;
  uint64_t data_offset = 0;  // first byte after the header
  uint64_t data_size = 0;    // prod(shape) * itemsize (object arrays: the rest of the input)
  /** Dtype restored from a `# tensorbridge:dtype=...` comment (bfloat16 written as '<u2'). */
  bool tb_dtype_note = false;
  /** 'U' (UTF-32 text) or 'S' (bytes) for fixed-width text arrays, 0 otherwise; width in characters. */
  char text_kind = 0;
  uint64_t text_width = 0;
};

/** Parses and validates the header against the input size (nothing allocated from claims). */
NpyHeader read_npy_header(const Reader& r);

/** Loads one .npy: a Tensor (zero-copy for native-order data) or, for object arrays, the unpickled
 *  Value (a dict for a 0-d array holding a dict, a list for 1-d arrays). */
Value load_npy_value(const std::shared_ptr<Reader>& r, const LoadOptions& opts = {});
/** As above, charging the load's shared budget (an archive's members share one). */
Value load_npy_value(const std::shared_ptr<Reader>& r, const LoadOptions& opts, LoadBudget& budget);
/** Loads one numeric .npy as a tensor; object arrays throw UnsupportedError. */
Tensor load_npy_tensor(const std::shared_ptr<Reader>& r, const LoadOptions& opts = {});

/** The full header bytes (magic through '\n') numpy would write for this dtype and shape. */
std::string npy_header_bytes(DType dtype, const Shape& shape, bool fortran_order = false);
/** Writes one tensor as .npy (header + row-major data, byte-identical to np.save for numpy dtypes). */
void write_npy(Writer& w, const Tensor& t);

/** Checkpoint with root = the array (Tensor) or the object array's value. */
Checkpoint load_npy(const Source& src, const LoadOptions& opts = {});
/** The .npy writer's options (--option KEY=VALUE). */
struct NpyWriteOptions : WriteOptions {
  bool object = false;  // write a tree (not a lone tensor) as a pickled object array
};
/** Writes a single tensor (root Tensor, or a tree holding exactly one tensor); a tree is written as an
 *  object array (pickle) only with opts.object. */
void write_npy_file(const Checkpoint& ckpt, const std::filesystem::path& path, const NpyWriteOptions& opts);
/** write_npy_file with SaveOptions::options parsed as NpyWriteOptions (key "object" = 0 or 1). */
void save_npy(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts = {});

/** Checkpoint with root = Dict key -> Value (member name minus ".npy"). */
Checkpoint load_npz(const Source& src, const LoadOptions& opts = {});
/** The .npz writer's options (--option KEY=VALUE). */
struct NpzWriteOptions : WriteOptions {
  bool compress = false;  // deflate the members as np.savez_compressed (else stored, as np.savez)
};
/** One member "<name>.npy" per flattened tensor. */
void write_npz(const Checkpoint& ckpt, const std::filesystem::path& path, const NpzWriteOptions& opts);
/** write_npz with SaveOptions::options parsed as NpzWriteOptions (key "compress" = 0 or 1). */
void save_npz(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts = {});

}  // namespace tb
