// Byte I/O. Every parser reads through a Reader (positional reads, a label for messages, optional
// zero-copy mapping) and every writer writes through a Writer. File outputs are atomic: bytes go
// to a temporary file in the target folder, which is fsynced and renamed to the target on commit()
// (multi-file outputs: tensor/atomic_output.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace tb {

/** Random-access input bytes with a label for messages; implementations are files (mapped or read),
 *  memory and sub-ranges. Reads are positional (no shared cursor). */
class Reader {
 public:
  /** Destroying the last reference closes the file; storages from map() keep their mapping alive. */
  virtual ~Reader() = default;
  /** Total size of the input in bytes. */
  virtual uint64_t size() const = 0;
  /** Reads exactly n bytes at offset into dst; throws FormatError ("truncated") when out of range. */
  virtual void read_at(uint64_t offset, void* dst, size_t n) const = 0;
  /** File name (or "<memory>") used in every error message. */
  virtual const std::string& label() const = 0;
  /** Zero-copy storage for [offset, offset+n) when the bytes are mapped or in memory; nullptr otherwise. */
  virtual std::shared_ptr<Storage> map(uint64_t offset, size_t n) const;
  /** Pointer to all bytes when the whole input is in memory or mapped; nullptr otherwise. */
  virtual const uint8_t* contiguous_bytes() const { return nullptr; }

  /** n bytes at offset as a new vector; FormatError when out of range. */
  std::vector<uint8_t> read_bytes(uint64_t offset, size_t n) const;
  /** n bytes at offset as a std::string (may hold NULs); FormatError when out of range. */
  std::string read_string(uint64_t offset, size_t n) const;
  template <class T>
  T read_le(uint64_t offset) const {  // little-endian integer
    uint8_t b[sizeof(T)];
    read_at(offset, b, sizeof(T));
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof(T); ++i) v |= uint64_t(b[i]) << (8 * i);
    return static_cast<T>(v);
  }
  /** Storage holding [offset, offset+n): zero-copy when possible, else a heap copy. */
  std::shared_ptr<Storage> load(uint64_t offset, size_t n) const;
  /** Throws FormatError unless [offset, offset+n) lies within the input. */
  void check_range(uint64_t offset, uint64_t n, const std::string& what) const;
};

/** Opens a file; with use_mmap the file is mapped (private, copy-on-write) and map() is zero-copy. */
std::shared_ptr<Reader> open_file(const std::filesystem::path& path, bool use_mmap = true);
/** Reader over an already open file descriptor, which it takes over (closes); label names it in
 *  messages. The caller has checked what fd is (a regular file); mapping works as for open_file. */
std::shared_ptr<Reader> open_fd(int fd, std::string label, bool use_mmap = true);
/** Reader over bytes in memory (tests, decompressed zip members). */
std::shared_ptr<Reader> memory_reader(std::vector<uint8_t> bytes, std::string label = "<memory>");
/** Reader over [offset, offset+size) of another reader; label "parent:member". */
std::shared_ptr<Reader> sub_reader(std::shared_ptr<Reader> parent, uint64_t offset, uint64_t size, std::string label);

/** Sequential output bytes; tell() is the count written so far. Errors throw IoError. */
class Writer {
 public:
  /** Polymorphic base; see the subclasses for what destruction does with unfinished output. */
  virtual ~Writer() = default;
  /** Appends n bytes from data. */
  virtual void write(const void* data, size_t n) = 0;
  /** Bytes written so far (the offset the next write lands at). */
  virtual uint64_t tell() const = 0;
  /** Appends the string's bytes (no terminator). */
  void write(const std::string& s) { write(s.data(), s.size()); }
  /** Appends v as sizeof(T) little-endian bytes (integers). */
  template <class T>
  void write_le(T v) {
    uint8_t b[sizeof(T)];
    for (size_t i = 0; i < sizeof(T); ++i) b[i] = uint8_t(uint64_t(v) >> (8 * i));
    write(b, sizeof(T));
  }
  /** Appends n zero bytes (padding, alignment). */
  void write_zeros(size_t n);
  /** Writes a tensor's elements in row-major order without materialising a packed copy; bytes of a
   *  mapped file (Storage::file_origin) go through copy_from_file. */
  void write_tensor(const Tensor& t);
  /** Appends n bytes of file fd at offset without passing them through memory (copy_file_range);
   *  returns how many were appended (0 when this writer or the file system cannot), the caller writes
   *  the rest. */
  virtual size_t copy_from_file(int fd, uint64_t offset, size_t n) { return 0; }
  /** Tensors smaller than this are written from memory. */
  static constexpr size_t kKernelCopyMin = 1u << 20;
};

/** A Writer into a growing in-memory buffer (tests, small members before compression). */
class MemoryWriter : public Writer {
 public:
  using Writer::write;
  /** Appends n bytes to bytes(). */
  void write(const void* data, size_t n) override;
  /** Bytes appended so far. */
  uint64_t tell() const override { return bytes_.size(); }
  /** The buffer written so far; the caller may move it out. */
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

class DirHandle;
class NewFileWriter;

/** Writes to a temporary ".tb-<16 hex>.tmp" in the target's folder (locked, removed by the signal
 *  handler of install_temp_cleanup_handlers() and by the next writer into that folder should this
 *  process die); commit() fsyncs it and renames it to the target: over it with overwrite (keeping the
 *  old file's permission bits), else with a no-replace rename, so of concurrent writers exactly one
 *  wins. Destroying it without commit() removes the temporary. Refuses an existing target unless
 *  overwrite is set, and always refuses to replace a symlink, folder, device, FIFO or socket. */
class AtomicFileWriter : public Writer {
 public:
  /** Creates the temporary now (removing stale ones of dead writers); throws IoError when target exists
   *  without overwrite, names a folder or special file, or the folder is not writable. */
  explicit AtomicFileWriter(const std::filesystem::path& target, bool overwrite = false);
  /** Not copyable; destruction without commit() removes the temporary and leaves the target untouched. */
  ~AtomicFileWriter() override;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  using Writer::write;
  /** Appends to the temporary; must not be called after commit(). */
  void write(const void* data, size_t n) override;
  /** Bytes written to the temporary so far. */
  uint64_t tell() const override;
  /** Kernel-side copy into the temporary; returns the bytes copied (may be fewer than n, then write the rest). */
  size_t copy_from_file(int fd, uint64_t offset, size_t n) override;
  /** Flushes and fsyncs the temporary, renames it to target (see the class comment) and fsyncs the folder;
   *  throws IoError (target appeared meanwhile without overwrite, rename failed). Call at most once. */
  void commit();
  /** The path given to the constructor. */
  const std::filesystem::path& target() const { return target_; }
  /** The temporary's path, for libraries that write the file themselves (HDF5); valid until commit(). */
  const std::filesystem::path& temp_path() const { return temp_; }

 private:
  std::filesystem::path target_, temp_;
  std::unique_ptr<DirHandle> dir_;
  std::unique_ptr<NewFileWriter> file_;
  bool overwrite_ = false;
  bool committed_ = false;
};

/** Progress of long writes: every AtomicFileWriter reports the bytes it writes to this callback
 *  (the CLI draws a progress bar on a terminal). Unset by default; not thread-safe to change while
 *  writers run. */
void set_write_progress(std::function<void(uint64_t bytes_written)> cb);

/** For writers whose library writes AtomicFileWriter::temp_path() itself (HDF5) instead of going
 *  through Writer::write: reports n bytes written to the progress callback. */
void report_write_progress(uint64_t n);

/** Once a tensor's bytes have been written out: when it is a view of a mapped input file, drops its
 *  pages from the process's RSS (MADV_DONTNEED; left alone if any page was written to); a Deferred
 *  storage frees its computed bytes. Writer::write_tensor does it; a no-op for other tensors. For
 *  writers that hand the bytes to a library. */
void release_written_pages(const Tensor& t);

/** Reads a whole small file (metadata, JSON, text); throws IoError. max_bytes guards against surprises. */
std::string read_text_file(const std::filesystem::path& path, size_t max_bytes = 256u << 20);

}  // namespace tb
