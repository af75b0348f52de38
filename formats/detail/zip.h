// Zip container reader and writer shared by .npz, torch.save archives and .keras files.
//
// Layout (PKWARE APPNOTE 6.3; only what these formats use):
//  1. Per entry: local header `PK\3\4` (30 bytes + name + extra), the data, and when general-purpose
//     flag bit 3 is set a data descriptor `PK\7\8` + crc32 + sizes (4-byte sizes, 8-byte with ZIP64).
//     Local sizes may be zero (bit 3): sizes and CRC are taken from the CENTRAL directory only; the data
//     offset is local_header_offset + 30 + name_len + extra_len read from the LOCAL header (the local
//     extra field may differ from the central one, e.g. torch's 'FB' padding, numpy's ZIP64 extra).
//  2. Central directory: one `PK\1\2` record (46 bytes + name + extra + comment) per entry.
//  3. End of central directory `PK\5\6` (22 bytes + comment <= 65535), found by searching backwards.
//     When a field overflows (0xFFFF / 0xFFFFFFFF) a ZIP64 EOCD record `PK\6\6` and its locator
//     `PK\6\7` (20 bytes, right before the EOCD) hold the 64-bit values; per entry the ZIP64 extra field
//     (id 0x0001) holds, in order, the uncompressed size, compressed size and local header offset that
//     were 0xFFFFFFFF in the fixed fields.
// Methods: 0 stored (read zero-copy as a sub-reader), 8 deflate (inflated with zlib into memory, sizes
// capped and CRC verified). Everything else is refused with UnsupportedError.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tensor/io.h"

namespace tb::zip {

struct Entry {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflate
  uint16_t flags = 0;   // general-purpose bit flags (bit 3: data descriptor, bit 11: UTF-8 name)
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t local_header_offset = 0;
  /** First byte of the (compressed) data, computed from the local header. */
  uint64_t data_offset = 0;
  bool stored() const { return method == 0; }
};

struct ReadOptions {
  /** Largest inflated member accepted (raise it for huge deflated members). */
  uint64_t max_inflated_size = uint64_t(4) << 30;
  /** Largest uncompressed/compressed ratio accepted for members above 1 MiB. Deflate cannot exceed
   *  about 1032:1 (all-zero input), so a larger claim is a lie; the default leaves room for zeros. */
  double max_ratio = 1100.0;
  /** Also verify the CRC of stored members when they are opened (costs one pass; off: zero copy). */
  bool verify_stored_crc = false;
};

/** True when the input starts like a zip file (`PK\3\4`, or `PK\5\6` for an empty archive). Never throws. */
bool looks_like_zip(const Reader& r);

/** True when the input starts with a local header (`PK\3\4`). Never throws. */
bool starts_with_member(const Reader& r);

/** What the archive's first local header says about its member, read without the central directory. */
struct FirstMember {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflate
  /** Bytes from the start of the input to the member's data (30 + name + local extra). */
  uint64_t data_offset = 0;
};

/** The first member when the input starts with a local header (`PK\3\4`) whose name has 1..max_name
 *  bytes, all present; nullopt otherwise. A sniffing shortcut: nothing else is checked. Never throws. */
std::optional<FirstMember> first_member(const Reader& r, size_t max_name = 1024);

class ZipReader {
 public:
  /** Parses the central directory; throws FormatError describing the first inconsistency. */
  explicit ZipReader(std::shared_ptr<Reader> reader, ReadOptions opts = {});

  const std::vector<Entry>& entries() const { return entries_; }
  /** nullptr when absent. */
  const Entry* find(std::string_view name) const;
  /** Throws KeyError naming the archive when absent. */
  const Entry& at(std::string_view name) const;
  /** The member's bytes as a Reader: a zero-copy sub-reader for stored members, inflated memory for
   *  deflated ones (size and CRC checked). Label "archive:member". */
  std::shared_ptr<Reader> open(const Entry& e) const;
  /** Refuses a deflated member whose claimed size is over the limits or a ratio no deflate stream
   *  reaches (a zip bomb), before anything is inflated or charged; open() checks the same. */
  void check_claim(const Entry& e) const;
  /** The member's bytes copied into memory. */
  std::vector<uint8_t> read(const Entry& e) const;
  std::string read_string(const Entry& e) const;
  /** Whether the archive had a ZIP64 end-of-central-directory record. */
  bool zip64() const { return zip64_; }
  const std::shared_ptr<Reader>& reader() const { return reader_; }
  const std::string& label() const { return reader_->label(); }

 private:
  std::shared_ptr<Reader> reader_;
  ReadOptions opts_;
  std::vector<Entry> entries_;
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  // Transparent: find(string_view) needs no temporary std::string (one lookup per tensor in a .pt).
  std::unordered_map<std::string, size_t, NameHash, std::equal_to<>> index_;
  bool zip64_ = false;
};

struct WriteOptions {
  /** Data of every member starts at a multiple of this (0/1: no padding). The padding is a local
   *  extra field with id 0x4246 ('FB'), as torch writes it. */
  uint64_t align = 0;
  /** Write ZIP64 records even when nothing needs them (torch does). */
  bool force_zip64 = false;
  /** DOS time/date of every entry; fixed so output is byte-stable (default 1980-01-01 00:00). */
  uint16_t dos_time = 0;
  uint16_t dos_date = (0 << 9) | (1 << 5) | 1;
  /** zlib level for deflated members. */
  int level = 6;
};

/** Streams members to a Writer (which must start empty or at the archive's first byte); nothing is
 *  held in memory beyond the central directory records. Call finish() once at the end. */
class ZipWriter {
 public:
  /** Writes exactly the declared number of bytes of one member to the Writer it is given. */
  using Producer = std::function<void(Writer&)>;

  explicit ZipWriter(Writer& out, WriteOptions opts = {});
  ~ZipWriter();
  ZipWriter(const ZipWriter&) = delete;
  ZipWriter& operator=(const ZipWriter&) = delete;

  /** Stored member from memory (CRC in the local header, no data descriptor). */
  void add_stored(const std::string& name, const void* data, size_t n);
  void add_stored(const std::string& name, std::string_view bytes) { add_stored(name, bytes.data(), bytes.size()); }
  /** Stored member streamed by produce (exactly size bytes); the CRC is computed while streaming and
   *  written in a data descriptor (flag bit 3), as torch does. */
  void add_stored(const std::string& name, uint64_t size, const Producer& produce);
  /** Deflated member from memory. */
  void add_deflated(const std::string& name, const void* data, size_t n);
  void add_deflated(const std::string& name, std::string_view bytes) { add_deflated(name, bytes.data(), bytes.size()); }
  /** Deflated member streamed by produce (size bytes uncompressed), sizes in a data descriptor. */
  void add_deflated(const std::string& name, uint64_t size, const Producer& produce);
  /** Writes the central directory and end records. */
  void finish();
  /** Offset where the last added member's data starts (relative to the Writer's start). */
  uint64_t last_data_offset() const { return last_data_offset_; }

 private:
  struct Record {
    std::string name;
    uint16_t method, flags;
    uint32_t crc;
    uint64_t csize, usize, offset;
  };
  struct LocalPlan {
    uint16_t flags;
    bool zip64;
    uint64_t data_offset;
  };
  LocalPlan write_local(const std::string& name, uint16_t method, bool descriptor, uint32_t crc, uint64_t csize,
                        uint64_t usize, bool need_zip64);
  void check_name(const std::string& name);
  Writer& out_;
  WriteOptions opts_;
  std::vector<Record> records_;
  std::unordered_map<std::string, size_t> names_;
  uint64_t last_data_offset_ = 0;
  bool finished_ = false;
};

/** CRC-32 update (libdeflate when built with it, else zlib). */
uint32_t crc32_update(uint32_t crc, const void* data, size_t n);

}  // namespace tb::zip
