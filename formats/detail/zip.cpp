// Zip reader and writer; layout notes in zip.h.
#include "formats/detail/zip.h"
#include "tensor/checked.h"

#include <zlib.h>
#ifdef TB_WITH_LIBDEFLATE
#include <libdeflate.h>
#endif

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

namespace tb::zip {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint32_t kDescriptorSig = 0x08074b50;
constexpr uint32_t kMax32 = 0xFFFFFFFFu;
constexpr uint16_t kMax16 = 0xFFFFu;
constexpr size_t kEocdSize = 22;
constexpr size_t kMaxComment = 65535;

uint16_t le16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
uint64_t le64(const uint8_t* p) { return uint64_t(le32(p)) | (uint64_t(le32(p + 4)) << 32); }

void put16(std::string& s, uint16_t v) {
  s.push_back(char(v & 0xFF));
  s.push_back(char(v >> 8));
}
void put32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(char((v >> (8 * i)) & 0xFF));
}
void put64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(char((v >> (8 * i)) & 0xFF));
}

std::string method_name(uint16_t m) {
  switch (m) {
    case 0: return "stored";
    case 8: return "deflate";
    case 9: return "deflate64";
    case 12: return "bzip2";
    case 14: return "lzma";
    case 93: return "zstd";
    case 95: return "xz";
    default: return str("method ", m);
  }
}

/** The fields of a 30-byte local header that locate a member's name and data. */
struct LocalHeader {
  uint16_t method;
  uint16_t name_len;
  uint16_t extra_len;
  /** Bytes from the header's first byte to the member's data. */
  uint64_t size() const { return 30 + uint64_t(name_len) + extra_len; }
};

LocalHeader parse_local(const uint8_t* lh) { return {le16(lh + 8), le16(lh + 26), le16(lh + 28)}; }

/** Where the central directory lies, as the end records give it. */
struct Directory {
  uint64_t count = 0;
  uint64_t size = 0;
  uint64_t offset = 0;
  bool zip64 = false;
};

/** Offset of the end-of-central-directory record within `tail`, searching backwards; -1 when none. */
int64_t find_eocd(const std::vector<uint8_t>& tail) {
  const uint64_t tail_len = tail.size();
  int64_t fallback = -1;
  for (int64_t i = int64_t(tail_len) - int64_t(kEocdSize); i >= 0; --i) {
    if (le32(&tail[size_t(i)]) != kEocdSig) continue;
    uint16_t comment_len = le16(&tail[size_t(i)] + 20);
    if (uint64_t(i) + kEocdSize + comment_len == tail_len) return i;
    if (fallback < 0) fallback = i;  // comment length disagrees (trailing garbage): last resort
  }
  return fallback;
}

/** Reads the end records (EOCD, and the ZIP64 one its locator points at) and checks the directory's bounds. */
Directory read_directory(const Reader& r) {
  const std::string& L = r.label();
  const uint64_t size = r.size();
  TB_CHECK(size >= kEocdSize, FormatError, "[zip] '", L, "': ", size,
           " bytes is too small for a zip archive (needs at least a 22-byte end-of-central-directory record)");

  // 1. End of central directory: search backwards over at most 22 + 65535 bytes.
  uint64_t tail_len = std::min<uint64_t>(size, kEocdSize + kMaxComment);
  std::vector<uint8_t> tail = r.read_bytes(size - tail_len, size_t(tail_len));
  const int64_t eocd_in_tail = find_eocd(tail);
  TB_CHECK(eocd_in_tail >= 0, FormatError, "[zip] '", L,
           "': no end-of-central-directory record (PK\\5\\6) in the last ", tail_len,
           " bytes; not a zip archive or truncated");
  const uint64_t eocd_pos = size - tail_len + uint64_t(eocd_in_tail);
  const uint8_t* e = &tail[size_t(eocd_in_tail)];
  uint16_t disk = le16(e + 4), cd_disk = le16(e + 6);
  Directory d{le16(e + 10), le32(e + 12), le32(e + 16), false};
  uint64_t cd_end_limit = eocd_pos;

  // 2. ZIP64 locator right before the EOCD, pointing at the ZIP64 EOCD record.
  if (eocd_pos >= 20 && r.read_le<uint32_t>(eocd_pos - 20) == kZip64LocatorSig) {
    uint8_t loc[20];
    r.read_at(eocd_pos - 20, loc, 20);
    uint64_t rec_off = le64(loc + 8);
    TB_CHECK(rec_off + 56 <= eocd_pos - 20 && rec_off < eocd_pos, FormatError, "[zip] '", L,
             "': ZIP64 locator points at offset ", rec_off, " but the record must end before ", eocd_pos - 20);
    uint8_t rec[56];
    r.read_at(rec_off, rec, 56);
    TB_CHECK(le32(rec) == kZip64EocdSig, FormatError, "[zip] '", L, "': expected a ZIP64 end-of-central-directory ",
             "record (PK\\6\\6) at offset ", rec_off);
    disk = uint16_t(le32(rec + 16));
    cd_disk = uint16_t(le32(rec + 20));
    d = {le64(rec + 32), le64(rec + 40), le64(rec + 48), true};
    cd_end_limit = rec_off;
  }
  TB_CHECK(disk == 0 && cd_disk == 0, UnsupportedError, "[zip] '", L,
           "': multi-volume (split) archives are not supported");
  TB_CHECK(d.offset <= cd_end_limit && d.size <= cd_end_limit - d.offset, FormatError, "[zip] '", L,
           "': central directory [", d.offset, ", +", d.size, ") does not fit before the end record at ", cd_end_limit,
           "; truncated or not a zip archive");
  TB_CHECK(d.count <= d.size / 46, FormatError, "[zip] '", L, "': end record claims ", d.count, " entries but the ",
           d.size, "-byte central directory holds at most ", d.size / 46);
  return d;
}

/** Takes from a ZIP64 extra area (id 0x0001) the 8-byte values of the fields that hold 0xFFFFFFFF, in order. */
void read_zip64_extra(const std::string& L, Entry& en, const uint8_t* x, uint16_t extra_len, uint16_t start_disk) {
  bool need_u = en.uncompressed_size == kMax32, need_c = en.compressed_size == kMax32,
       need_o = en.local_header_offset == kMax32, need_d = start_disk == kMax16;
  size_t xp = 0;
  while (xp + 4 <= extra_len) {
    uint16_t id = le16(x + xp), len = le16(x + xp + 2);
    TB_CHECK(xp + 4 + len <= extra_len, FormatError, "[zip] '", L, "': entry '", en.name,
             "' has an extra field running past its extra area");
    if (id == 0x0001) {
      const uint8_t* z = x + xp + 4;
      size_t zp = 0;
      auto take = [&](uint64_t& field, const char* what) {
        TB_CHECK(zp + 8 <= len, FormatError, "[zip] '", L, "': entry '", en.name, "' ZIP64 extra field lacks the ",
                 what);
        field = le64(z + zp);
        zp += 8;
      };
      if (need_u) take(en.uncompressed_size, "uncompressed size"), need_u = false;
      if (need_c) take(en.compressed_size, "compressed size"), need_c = false;
      if (need_o) take(en.local_header_offset, "local header offset"), need_o = false;
      if (need_d) need_d = false;  // disk number: single-volume only
    }
    xp += 4 + size_t(len);
  }
  TB_CHECK(!(need_u || need_c || need_o), FormatError, "[zip] '", L, "': entry '", en.name,
           "' has 0xFFFFFFFF size/offset fields but no ZIP64 extra field holding the real values");
}

/** Parses central directory record i at cd[pos]; sets rec_len to the record's length. */
Entry read_central_record(const std::string& L, const std::vector<uint8_t>& cd, size_t pos, uint64_t i,
                          uint64_t cd_offset, size_t& rec_len) {
  TB_CHECK(pos + 46 <= cd.size(), FormatError, "[zip] '", L, "': central directory entry ", i,
           " runs past the directory end");
  const uint8_t* c = &cd[pos];
  TB_CHECK(le32(c) == kCentralSig, FormatError, "[zip] '", L, "': expected central directory entry ", i,
           " (PK\\1\\2) at offset ", cd_offset + pos);
  Entry en;
  en.flags = le16(c + 8);
  en.method = le16(c + 10);
  en.crc32 = le32(c + 16);
  en.compressed_size = le32(c + 20);
  en.uncompressed_size = le32(c + 24);
  uint16_t name_len = le16(c + 28), extra_len = le16(c + 30), comment_len = le16(c + 32);
  uint16_t start_disk = le16(c + 34);
  en.local_header_offset = le32(c + 42);
  rec_len = 46 + size_t(name_len) + extra_len + comment_len;
  TB_CHECK(pos + rec_len <= cd.size(), FormatError, "[zip] '", L, "': central directory entry ", i, " (name ", name_len,
           " + extra ", extra_len, " + comment ", comment_len, " bytes) runs past the directory end");
  en.name.assign(reinterpret_cast<const char*>(c + 46), name_len);
  TB_CHECK(en.name.find('\0') == std::string::npos, FormatError, "[zip] '", L, "': entry ", i,
           " has a NUL byte in its name");
  TB_CHECK(!en.name.empty(), FormatError, "[zip] '", L, "': entry ", i, " has an empty name");
  read_zip64_extra(L, en, c + 46 + name_len, extra_len, start_disk);
  return en;
}

/** Sets every entry's data offset from its LOCAL header's name/extra lengths. A file read through
 *  pread is read in 64 KiB windows: one call covers the headers of many small members (a .pt of
 *  100,000 tensors has one every 128 bytes) instead of one call per member. */
void locate_data(const Reader& r, std::vector<Entry>& entries, uint64_t cd_offset) {
  const std::string& L = r.label();
  std::vector<uint8_t> win;
  uint64_t win_pos = 0;
  const uint8_t* direct = r.contiguous_bytes();
  auto read_local = [&](uint64_t off, uint8_t* lh) {  // off + 30 <= cd_offset, checked by the caller
    if (direct) return r.read_at(off, lh, 30);
    if (off < win_pos || off + 30 > win_pos + win.size()) {
      win.resize(size_t(std::min<uint64_t>(64 * 1024, cd_offset - off)));
      r.read_at(off, win.data(), win.size());
      win_pos = off;
    }
    std::memcpy(lh, win.data() + (off - win_pos), 30);
  };
  for (Entry& en : entries) {
    TB_CHECK(en.local_header_offset <= cd_offset && 30 <= cd_offset - en.local_header_offset, FormatError, "[zip] '", L,
             "': entry '", en.name, "' local header at ", en.local_header_offset,
             " is not before the central directory at ", cd_offset);
    uint8_t lh[30];
    read_local(en.local_header_offset, lh);
    TB_CHECK(le32(lh) == kLocalSig, FormatError, "[zip] '", L, "': entry '", en.name,
             "': expected a local header (PK\\3\\4) at offset ", en.local_header_offset);
    uint64_t data = en.local_header_offset + parse_local(lh).size();
    TB_CHECK(data <= cd_offset && en.compressed_size <= cd_offset - data, FormatError, "[zip] '", L, "': entry '",
             en.name, "' data [", data, ", +", en.compressed_size, ") runs into the central directory at ", cd_offset,
             "; truncated?");
    en.data_offset = data;
    if (en.method == 0)
      TB_CHECK(en.compressed_size == en.uncompressed_size, FormatError, "[zip] '", L, "': stored entry '", en.name,
               "' has compressed size ", en.compressed_size, " != uncompressed size ", en.uncompressed_size);
  }
}

/** Members must not overlap: several directory records sharing one deflated member is the
 *  non-recursive zip bomb (many names, gigabytes inflated from a few kilobytes). */
void check_no_overlap(const std::string& L, const std::vector<Entry>& entries) {
  std::vector<const Entry*> by_offset;
  by_offset.reserve(entries.size());
  for (const Entry& en : entries) by_offset.push_back(&en);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const Entry* a, const Entry* b) { return a->local_header_offset < b->local_header_offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const Entry& a = *by_offset[i - 1];
    const Entry& b = *by_offset[i];
    uint64_t a_end = 0;  // the message is built only on overflow
    if (__builtin_add_overflow(a.data_offset, a.compressed_size, &a_end))
      checked_add<uint64_t>(a.data_offset, a.compressed_size, str("[zip] '", L, "': end of entry '", a.name, "'"));
    TB_CHECK(a_end <= b.local_header_offset, FormatError, "[zip] '", L, "': entries '", a.name, "' and '", b.name,
             "' overlap (data [", a.data_offset, ", +", a.compressed_size, ") and local header at ",
             b.local_header_offset, "); refused as a zip bomb");
  }
}

}  // namespace

uint32_t crc32_update(uint32_t crc, const void* data, size_t n) {
#ifdef TB_WITH_LIBDEFLATE
  return uint32_t(libdeflate_crc32(crc, data, n));
#else
  const auto* p = static_cast<const Bytef*>(data);
  while (n > 0) {
    uInt k = uInt(std::min<size_t>(n, 1u << 30));
    crc = uint32_t(::crc32(crc, p, k));
    p += k;
    n -= k;
  }
  return crc;
#endif
}

bool looks_like_zip(const Reader& r) {
  try {
    if (r.size() < 4) return false;
    uint32_t sig = r.read_le<uint32_t>(0);
    return sig == kLocalSig || (sig == kEocdSig && r.size() >= kEocdSize);
  } catch (...) {
    return false;
  }
}

bool starts_with_member(const Reader& r) {
  try {
    return r.size() >= 4 && r.read_le<uint32_t>(0) == kLocalSig;
  } catch (...) {
    return false;
  }
}

std::optional<FirstMember> first_member(const Reader& r, size_t max_name) {
  try {
    if (r.size() < 30) return std::nullopt;
    uint8_t lh[30];
    r.read_at(0, lh, 30);
    if (le32(lh) != kLocalSig) return std::nullopt;
    const LocalHeader h = parse_local(lh);
    if (h.name_len == 0 || h.name_len > max_name || r.size() < 30 + uint64_t(h.name_len)) return std::nullopt;
    FirstMember m{std::string(h.name_len, '\0'), h.method, h.size()};
    r.read_at(30, m.name.data(), h.name_len);
    return m;
  } catch (...) {
    return std::nullopt;
  }
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

ZipReader::ZipReader(std::shared_ptr<Reader> reader, ReadOptions opts) : reader_(std::move(reader)), opts_(opts) {
  const Reader& r = *reader_;
  const std::string& L = r.label();
  const Directory dir = read_directory(r);
  zip64_ = dir.zip64;
  std::vector<uint8_t> cd = r.read_bytes(dir.offset, size_t(dir.size));
  entries_.reserve(size_t(dir.count));
  index_.reserve(size_t(dir.count));
  size_t pos = 0;
  for (uint64_t i = 0; i < dir.count; ++i) {
    size_t rec_len = 0;
    Entry en = read_central_record(L, cd, pos, i, dir.offset, rec_len);
    TB_CHECK(index_.emplace(en.name, entries_.size()).second, FormatError, "[zip] '", L, "': the name '", en.name,
             "' appears twice in the central directory");
    entries_.push_back(std::move(en));
    pos += rec_len;
  }
  locate_data(r, entries_, dir.offset);
  check_no_overlap(L, entries_);
}

const Entry* ZipReader::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const Entry& ZipReader::at(std::string_view name) const {
  const Entry* e = find(name);
  if (!e) {
    std::string names;
    for (size_t i = 0; i < entries_.size() && i < 8; ++i) names += (i ? ", '" : "'") + entries_[i].name + "'";
    if (entries_.size() > 8) names += ", ...";
    throw KeyError(
        str("[zip] '", label(), "': no member '", name, "' (members: ", names.empty() ? "none" : names, ")"));
  }
  return *e;
}

void ZipReader::check_claim(const Entry& e) const {
  if (e.method == 0) return;
  const std::string L = label() + ":" + e.name;
  TB_CHECK(e.method == 8, UnsupportedError, "[zip] '", L, "' uses compression ", method_name(e.method),
           "; only stored and deflate members are supported");
  TB_CHECK(e.uncompressed_size <= opts_.max_inflated_size, UnsupportedError, "[zip] '", L, "' inflates to ",
           e.uncompressed_size, " bytes, above the limit of ", opts_.max_inflated_size,
           " bytes (raise zip::ReadOptions::max_inflated_size to accept it)");
  TB_CHECK(e.uncompressed_size <= (uint64_t(1) << 20) ||
               double(e.uncompressed_size) <= opts_.max_ratio * double(std::max<uint64_t>(e.compressed_size, 1)),
           FormatError, "[zip] '", L, "' claims ", e.uncompressed_size, " bytes from ", e.compressed_size,
           " compressed bytes, a ratio above ", opts_.max_ratio,
           ":1 (deflate cannot exceed about 1032:1); refused as a zip bomb");
}

std::shared_ptr<Reader> ZipReader::open(const Entry& e) const {
  const std::string L = label() + ":" + e.name;
  TB_CHECK(!(e.flags & 1), UnsupportedError, "[zip] '", L, "' is encrypted");
  if (e.method == 0) {
    auto sub = sub_reader(reader_, e.data_offset, e.uncompressed_size, L);
    if (opts_.verify_stored_crc) {
      uint32_t crc = 0;
      std::vector<uint8_t> buf(1 << 20);
      for (uint64_t off = 0; off < e.uncompressed_size;) {
        size_t k = size_t(std::min<uint64_t>(buf.size(), e.uncompressed_size - off));
        sub->read_at(off, buf.data(), k);
        crc = crc32_update(crc, buf.data(), k);
        off += k;
      }
      TB_CHECK(crc == e.crc32, FormatError, "[zip] '", L, "': CRC-32 mismatch (central directory says ", e.crc32,
               ", data gives ", crc, "); the file is corrupted");
    }
    return sub;
  }
  check_claim(e);
  TB_CHECK(e.uncompressed_size <= std::numeric_limits<size_t>::max(), UnsupportedError, "[zip] '", L, "' is too large");

  std::vector<uint8_t> out(size_t(e.uncompressed_size));
  z_stream zs{};
  TB_CHECK(inflateInit2(&zs, -MAX_WBITS) == Z_OK, InternalError, "inflateInit2 failed");
  struct Guard {
    z_stream* z;
    ~Guard() { inflateEnd(z); }
  } guard{&zs};
  std::vector<uint8_t> in(std::min<uint64_t>(e.compressed_size, 1 << 20) + 1);
  uint64_t in_off = 0;
  size_t produced = 0;
  uint8_t overflow_probe[64];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (zs.avail_in == 0 && in_off < e.compressed_size) {
      size_t k = size_t(std::min<uint64_t>(in.size(), e.compressed_size - in_off));
      reader_->read_at(e.data_offset + in_off, in.data(), k);
      in_off += k;
      zs.next_in = in.data();
      zs.avail_in = uInt(k);
    }
    bool into_probe = produced >= out.size();
    if (into_probe) {
      zs.next_out = overflow_probe;
      zs.avail_out = sizeof overflow_probe;
    } else {
      zs.next_out = out.data() + produced;
      zs.avail_out = uInt(std::min<size_t>(out.size() - produced, 1u << 30));
    }
    uInt before = zs.avail_out;
    bool had_input = zs.avail_in > 0;
    rc = inflate(&zs, Z_NO_FLUSH);
    size_t got = before - zs.avail_out;
    TB_CHECK(rc == Z_OK || rc == Z_STREAM_END || (rc == Z_BUF_ERROR && had_input), FormatError, "[zip] '", L,
             "': deflate stream is corrupt (zlib: ", zs.msg ? zs.msg : "error", ")");
    if (into_probe) {
      TB_CHECK(got == 0, FormatError, "[zip] '", L, "' inflates to more than the ", e.uncompressed_size,
               " bytes its central directory entry declares");
    } else {
      produced += got;
    }
    if (rc != Z_STREAM_END && got == 0 && zs.avail_in == 0 && in_off >= e.compressed_size)
      throw FormatError(str("[zip] '", L, "': deflate stream ends early after ", produced, " of ", e.uncompressed_size,
                            " bytes; truncated?"));
  }
  TB_CHECK(produced == out.size(), FormatError, "[zip] '", L, "' inflates to ", produced, " bytes but its central ",
           "directory entry declares ", e.uncompressed_size);
  uint32_t crc = crc32_update(0, out.data(), out.size());
  TB_CHECK(crc == e.crc32, FormatError, "[zip] '", L, "': CRC-32 mismatch (central directory says ", e.crc32,
           ", data gives ", crc, "); the file is corrupted");
  return memory_reader(std::move(out), L);
}

std::vector<uint8_t> ZipReader::read(const Entry& e) const {
  auto r = open(e);
  TB_CHECK(r->size() <= std::numeric_limits<size_t>::max(), UnsupportedError, "member too large");
  return r->read_bytes(0, size_t(r->size()));
}

std::string ZipReader::read_string(const Entry& e) const {
  auto b = read(e);
  return std::string(b.begin(), b.end());
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

namespace {

/** Forwards bytes, counting them and updating a CRC. */
class CrcWriter : public Writer {
 public:
  explicit CrcWriter(Writer& out) : out_(out) {}
  using Writer::write;
  void write(const void* data, size_t n) override {
    crc_ = crc32_update(crc_, data, n);
    n_ += n;
    out_.write(data, n);
  }
  uint64_t tell() const override { return n_; }
  uint32_t crc() const { return crc_; }
  /** Bytes of a file (a mapped tensor): read in 1 MiB chunks into one buffer that stays in cache,
   *  checksummed and written from there, rather than faulting in the input's mapping page by page. */
  size_t copy_from_file(int fd, uint64_t offset, size_t n) override {
    if (buf_.empty()) buf_.resize(size_t(1) << 20);
    size_t done = 0;
    while (done < n) {
      const ssize_t r = ::pread(fd, buf_.data(), std::min(buf_.size(), n - done), off_t(offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;  // the caller writes the rest from memory
      write(buf_.data(), size_t(r));
      done += size_t(r);
    }
    return done;
  }

 private:
  Writer& out_;
  uint32_t crc_ = 0;
  uint64_t n_ = 0;
  std::vector<uint8_t> buf_;
};

/** Deflates bytes into another Writer (raw deflate), counting both sides and the CRC. */
class DeflateWriter : public Writer {
 public:
  DeflateWriter(Writer& out, int level) : out_(out), buf_(1 << 16) {
    TB_CHECK(deflateInit2(&zs_, level, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK, InternalError,
             "deflateInit2 failed");
  }
  ~DeflateWriter() override { deflateEnd(&zs_); }
  using Writer::write;
  void write(const void* data, size_t n) override {
    crc_ = crc32_update(crc_, data, n);
    usize_ += n;
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
      uInt k = uInt(std::min<size_t>(n, 1u << 30));
      zs_.next_in = const_cast<Bytef*>(p);
      zs_.avail_in = k;
      pump(Z_NO_FLUSH);
      p += k;
      n -= k;
    }
  }
  void finish() {
    zs_.next_in = nullptr;
    zs_.avail_in = 0;
    pump(Z_FINISH);
  }
  uint64_t tell() const override { return usize_; }
  uint32_t crc() const { return crc_; }
  uint64_t csize() const { return csize_; }

 private:
  void pump(int flush) {
    for (;;) {
      zs_.next_out = buf_.data();
      zs_.avail_out = uInt(buf_.size());
      int rc = deflate(&zs_, flush);
      TB_ASSERT(rc != Z_STREAM_ERROR, "deflate");
      size_t got = buf_.size() - zs_.avail_out;
      if (got) {
        out_.write(buf_.data(), got);
        csize_ += got;
      }
      if (flush == Z_FINISH ? rc == Z_STREAM_END : (zs_.avail_in == 0 && zs_.avail_out != 0)) break;
    }
  }
  Writer& out_;
  z_stream zs_{};
  std::vector<uint8_t> buf_;
  uint32_t crc_ = 0;
  uint64_t usize_ = 0, csize_ = 0;
};

}  // namespace

ZipWriter::ZipWriter(Writer& out, WriteOptions opts) : out_(out), opts_(opts) {
  TB_CHECK(out_.tell() == 0, InternalError, "ZipWriter needs a Writer at offset 0 (offsets are absolute)");
}

ZipWriter::~ZipWriter() = default;

void ZipWriter::check_name(const std::string& name) {
  TB_ASSERT(!finished_, "add after finish");
  TB_CHECK(!name.empty() && name.size() < 65536, FormatError, "[zip] member name must have 1..65535 bytes, got ",
           name.size());
  TB_CHECK(name.find('\0') == std::string::npos, FormatError, "[zip] member name '", name, "' contains a NUL byte");
  TB_CHECK(names_.emplace(name, records_.size()).second, KeyError, "[zip] member '", name, "' is added twice");
}

ZipWriter::LocalPlan ZipWriter::write_local(const std::string& name, uint16_t method, bool descriptor, uint32_t crc,
                                            uint64_t csize, uint64_t usize, bool need_zip64) {
  const uint64_t offset = out_.tell();
  bool zip64 = opts_.force_zip64 || need_zip64 || offset >= kMax32;
  uint16_t flags = descriptor ? 0x0008 : 0;
  if (std::any_of(name.begin(), name.end(), [](char ch) { return uint8_t(ch) >= 0x80; })) flags |= 0x0800;
  std::string extra;
  if (zip64) {
    put16(extra, 0x0001);
    put16(extra, 16);
    put64(extra, descriptor ? 0 : usize);
    put64(extra, descriptor ? 0 : csize);
  }
  uint64_t data = offset + 30 + name.size() + extra.size();
  if (opts_.align > 1) {
    uint64_t pad = (opts_.align - data % opts_.align) % opts_.align;
    if (pad != 0 && pad < 4) pad += opts_.align;  // an extra field needs at least its 4-byte header
    if (pad != 0) {
      put16(extra, 0x4246);  // 'FB'
      put16(extra, uint16_t(pad - 4));
      extra.append(size_t(pad - 4), 'Z');
      data += pad;
    }
  }
  std::string h;
  put32(h, kLocalSig);
  put16(h, zip64 ? 45 : 20);
  put16(h, flags);
  put16(h, method);
  put16(h, opts_.dos_time);
  put16(h, opts_.dos_date);
  put32(h, descriptor ? 0 : crc);
  put32(h, zip64 ? kMax32 : (descriptor ? 0 : uint32_t(csize)));
  put32(h, zip64 ? kMax32 : (descriptor ? 0 : uint32_t(usize)));
  put16(h, uint16_t(name.size()));
  put16(h, uint16_t(extra.size()));
  h += name;
  h += extra;
  out_.write(h);
  last_data_offset_ = data;
  return {flags, zip64, data};
}

void ZipWriter::add_stored(const std::string& name, const void* data, size_t n) {
  check_name(name);
  uint32_t crc = crc32_update(0, data, n);
  uint64_t off = out_.tell();
  auto plan = write_local(name, 0, false, crc, n, n, n >= kMax32);
  out_.write(data, n);
  records_.push_back({name, 0, plan.flags, crc, n, n, off});
}

void ZipWriter::add_stored(const std::string& name, uint64_t size, const Producer& produce) {
  check_name(name);
  uint64_t off = out_.tell();
  auto plan = write_local(name, 0, true, 0, size, size, size >= kMax32);
  CrcWriter cw(out_);
  produce(cw);
  TB_ASSERT(cw.tell() == size, "member '", name, "' declared ", size, " bytes but its producer wrote ", cw.tell());
  std::string d;
  put32(d, kDescriptorSig);
  put32(d, cw.crc());
  if (plan.zip64) {
    put64(d, size);
    put64(d, size);
  } else {
    put32(d, uint32_t(size));
    put32(d, uint32_t(size));
  }
  out_.write(d);
  records_.push_back({name, 0, plan.flags, cw.crc(), size, size, off});
}

void ZipWriter::add_deflated(const std::string& name, const void* data, size_t n) {
  check_name(name);
  // Compress into memory first so the local header carries the real sizes (no data descriptor).
  MemoryWriter mem;
  DeflateWriter dw(mem, opts_.level);
  dw.write(data, n);
  dw.finish();
  uint64_t off = out_.tell();
  uint64_t csize = mem.bytes().size();
  auto plan = write_local(name, 8, false, dw.crc(), csize, n, n >= kMax32 || csize >= kMax32);
  out_.write(mem.bytes().data(), mem.bytes().size());
  records_.push_back({name, 8, plan.flags, dw.crc(), csize, n, off});
}

void ZipWriter::add_deflated(const std::string& name, uint64_t size, const Producer& produce) {
  check_name(name);
  uint64_t off = out_.tell();
  // Incompressible data grows by ~0.03%; plan ZIP64 when either size may cross 4 GiB.
  bool zip64 = size + size / 256 + 1024 >= kMax32;
  auto plan = write_local(name, 8, true, 0, 0, size, zip64);
  DeflateWriter dw(out_, opts_.level);
  produce(dw);
  dw.finish();
  TB_ASSERT(dw.tell() == size, "member '", name, "' declared ", size, " bytes but its producer wrote ", dw.tell());
  std::string d;
  put32(d, kDescriptorSig);
  put32(d, dw.crc());
  if (plan.zip64) {
    put64(d, dw.csize());
    put64(d, size);
  } else {
    put32(d, uint32_t(dw.csize()));
    put32(d, uint32_t(size));
  }
  out_.write(d);
  records_.push_back({name, 8, plan.flags, dw.crc(), dw.csize(), size, off});
}

void ZipWriter::finish() {
  TB_ASSERT(!finished_, "double finish");
  finished_ = true;
  const uint64_t cd_offset = out_.tell();
  for (const Record& rec : records_) {
    bool big = rec.usize >= kMax32 || rec.csize >= kMax32 || rec.offset >= kMax32;
    bool z64 = opts_.force_zip64 || big;
    std::string extra;
    if (z64) {
      put16(extra, 0x0001);
      put16(extra, 24);
      put64(extra, rec.usize);
      put64(extra, rec.csize);
      put64(extra, rec.offset);
    }
    std::string h;
    put32(h, kCentralSig);
    put16(h, uint16_t((3 << 8) | (z64 ? 45 : 20)));  // made by: Unix
    put16(h, z64 ? 45 : 20);
    put16(h, rec.flags);
    put16(h, rec.method);
    put16(h, opts_.dos_time);
    put16(h, opts_.dos_date);
    put32(h, rec.crc);
    put32(h, z64 ? kMax32 : uint32_t(rec.csize));
    put32(h, z64 ? kMax32 : uint32_t(rec.usize));
    put16(h, uint16_t(rec.name.size()));
    put16(h, uint16_t(extra.size()));
    put16(h, 0);                        // comment
    put16(h, 0);                        // disk
    put16(h, 0);                        // internal attributes
    put32(h, uint32_t(0100644) << 16);  // regular file, rw-r--r--
    put32(h, z64 ? kMax32 : uint32_t(rec.offset));
    h += rec.name;
    h += extra;
    out_.write(h);
  }
  const uint64_t cd_end = out_.tell();
  const uint64_t cd_size = cd_end - cd_offset;
  const uint64_t n = records_.size();
  bool z64 = opts_.force_zip64 || n >= kMax16 || cd_offset >= kMax32 || cd_size >= kMax32 ||
             std::any_of(records_.begin(), records_.end(),
                         [](const Record& r) { return r.usize >= kMax32 || r.csize >= kMax32 || r.offset >= kMax32; });
  std::string t;
  if (z64) {
    put32(t, kZip64EocdSig);
    put64(t, 44);
    put16(t, (3 << 8) | 45);
    put16(t, 45);
    put32(t, 0);
    put32(t, 0);
    put64(t, n);
    put64(t, n);
    put64(t, cd_size);
    put64(t, cd_offset);
    put32(t, kZip64LocatorSig);
    put32(t, 0);
    put64(t, cd_end);
    put32(t, 1);
  }
  put32(t, kEocdSig);
  put16(t, 0);
  put16(t, 0);
  put16(t, uint16_t(z64 ? kMax16 : n));
  put16(t, uint16_t(z64 ? kMax16 : n));
  put32(t, z64 ? kMax32 : uint32_t(cd_size));
  put32(t, z64 ? kMax32 : uint32_t(cd_offset));
  put16(t, 0);
  out_.write(t);
}

}  // namespace tb::zip
