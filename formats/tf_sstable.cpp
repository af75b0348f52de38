// LevelDB table reader/writer, CRC-32C and finding a TensorFlow bundle; layout in tf_sstable.h.
#include "formats/tf_sstable.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <sstream>

#include "formats/detail/open_beneath.h"

#include "tensor/checked.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace tb {

namespace {

constexpr uint64_t kTableMagic = 0xdb4775248b80fb57ull;
constexpr size_t kFooterSize = 48;
constexpr size_t kTrailerSize = 5;
constexpr size_t kTargetBlockSize = 256 * 1024;

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    t[i] = c;
  }
  return t;
}

uint32_t crc32c_soft(uint32_t crc, const uint8_t* p, size_t n) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}

/** a(x) * b(x) mod P(x) in the reflected bit order of the CRC register (bit 31 holds x^0). */
uint32_t crc32c_mulmod(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t bit = 1u << 31; bit != 0; bit >>= 1) {
    if (a & bit) product ^= b;
    b = (b & 1) ? (b >> 1) ^ 0x82f63b78u : b >> 1;  // b *= x
  }
  return product;
}

/** The register after feeding `n` zero bytes to register `crc`: crc * x^(8n) mod P. */
uint32_t crc32c_shift(uint32_t crc, uint64_t n) {
  static const std::array<uint32_t, 64> x2k = [] {  // x^(2^k) mod P
    std::array<uint32_t, 64> t{};
    uint32_t p = 1u << 30;  // x^1
    for (auto& v : t) {
      v = p;
      p = crc32c_mulmod(p, p);
    }
    return t;
  }();
  uint64_t bits = n * 8;
  for (int k = 0; bits != 0; ++k, bits >>= 1)
    if (bits & 1) crc = crc32c_mulmod(x2k[size_t(k)], crc);
  return crc;
}

#if defined(__x86_64__)
/** The register over n bytes with the SSE4.2 instruction. Large inputs run as three interleaved streams
 *  (the instruction's latency is three times its throughput) joined with crc32c_shift. */
__attribute__((target("sse4.2"))) uint32_t crc32c_sse42(uint32_t crc, const uint8_t* p, size_t n) {
  constexpr size_t kStripe = 8 * 1024;  // bytes per stream per round
  uint64_t c0 = crc;
  while (n >= 3 * kStripe) {
    uint64_t c1 = 0, c2 = 0;
    const uint8_t* q = p;
    for (size_t i = 0; i < kStripe; i += 8, q += 8) {
      uint64_t v0, v1, v2;
      std::memcpy(&v0, q, 8);
      std::memcpy(&v1, q + kStripe, 8);
      std::memcpy(&v2, q + 2 * kStripe, 8);
      c0 = _mm_crc32_u64(c0, v0);
      c1 = _mm_crc32_u64(c1, v1);
      c2 = _mm_crc32_u64(c2, v2);
    }
    c0 = crc32c_shift(crc32c_shift(uint32_t(c0), kStripe) ^ uint32_t(c1), kStripe) ^ uint32_t(c2);
    p += 3 * kStripe;
    n -= 3 * kStripe;
  }
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c0 = _mm_crc32_u64(c0, v);
  }
  uint32_t c32 = uint32_t(c0);
  for (; n > 0; --n, ++p) c32 = _mm_crc32_u8(c32, *p);
  return c32;
}
#endif

/** Reads a varint of at most 64 bits from [p, end); false when it runs past end or is too long. */
bool get_varint(const uint8_t*& p, const uint8_t* end, uint64_t& out) {
  out = 0;
  for (int shift = 0; shift <= 63 && p < end; shift += 7) {
    uint64_t b = *p++;
    if (shift == 63 && b > 1) return false;
    out |= (b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += char(uint8_t(v) | 0x80);
    v >>= 7;
  }
  out += char(uint8_t(v));
}

void put_fixed32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out += char(uint8_t(v >> (8 * i)));
}

uint32_t fixed32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

struct BlockHandle {
  uint64_t offset = 0, size = 0;
};

class TableReader {
 public:
  TableReader(const Reader& r, LoadBudget& budget) : r_(r), budget_(budget), L_(r.label()) {}

  std::vector<SSTableEntry> read_all() {
    const uint64_t size = r_.size();
    TB_CHECK(size >= kFooterSize, FormatError, "[tf-checkpoint] '", L_, "': ", size,
             " bytes is too small for a table (the footer alone takes 48); truncated?");
    auto footer = r_.read_bytes(size - kFooterSize, kFooterSize);
    uint64_t magic = uint64_t(fixed32(footer.data() + 40)) | uint64_t(fixed32(footer.data() + 44)) << 32;
    TB_CHECK(magic == kTableMagic, FormatError, "[tf-checkpoint] '", L_,
             "': the last 8 bytes are not the table magic number 0xdb4775248b80fb57; truncated or not an index?");
    const uint8_t* p = footer.data();
    const uint8_t* end = p + 40;
    BlockHandle meta, index;
    TB_CHECK(get_varint(p, end, meta.offset) && get_varint(p, end, meta.size) && get_varint(p, end, index.offset) &&
                 get_varint(p, end, index.size),
             FormatError, "[tf-checkpoint] '", L_, "': the footer's block handles are malformed");
    read_block(meta, "metaindex block");  // checked for integrity; TensorFlow stores nothing there
    std::string index_block = read_block(index, "index block");
    std::vector<SSTableEntry> out;
    std::vector<SSTableEntry> handles = parse_block(index_block, "index block");
    for (size_t i = 0; i < handles.size(); ++i) {
      const auto& h = handles[i];
      const uint8_t* q = reinterpret_cast<const uint8_t*>(h.value.data());
      BlockHandle bh;
      TB_CHECK(get_varint(q, q + h.value.size(), bh.offset) && get_varint(q, q + h.value.size(), bh.size), FormatError,
               "[tf-checkpoint] '", L_, "': index entry ", i, " is not a block handle");
      std::string what = str("data block ", i, " (at byte ", bh.offset, ")");
      for (auto& e : parse_block(read_block(bh, what), what)) {
        TB_CHECK(out.empty() || out.back().key < e.key, FormatError, "[tf-checkpoint] '", L_, "': key '", e.key,
                 "' in ", what, " is not after '", out.back().key, "' (keys must be sorted and unique)");
        TB_CHECK(e.key <= h.key, FormatError, "[tf-checkpoint] '", L_, "': key '", e.key, "' in ", what,
                 " is past its index key '", h.key, "'");
        out.push_back(std::move(e));
      }
    }
    return out;
  }

 private:
  std::string read_block(const BlockHandle& h, const std::string& what) {
    const uint64_t size = r_.size();
    uint64_t end = checked_add(checked_add(h.offset, h.size, "block end"), uint64_t(kTrailerSize), "block end");
    TB_CHECK(end <= size - kFooterSize, FormatError, "[tf-checkpoint] '", L_, "': the ", what, " (bytes ", h.offset,
             "..", end, ") runs past the table's end at ", size - kFooterSize, "; truncated?");
    budget_.charge_bytes(h.size, what);
    std::string block = r_.read_string(h.offset, size_t(h.size) + kTrailerSize);
    const uint8_t type = uint8_t(block[h.size]);
    uint32_t stored = fixed32(reinterpret_cast<const uint8_t*>(block.data()) + h.size + 1);
    uint32_t actual = crc32c_mask(crc32c_extend(0, block.data(), size_t(h.size) + 1));
    TB_CHECK(stored == actual, FormatError, "[tf-checkpoint] '", L_, "': CRC-32C mismatch in the ", what, " (stored ",
             stored, ", computed ", actual, "); the file is corrupt");
    TB_CHECK(type != 1, UnsupportedError, "[tf-checkpoint] '", L_, "': the ", what,
             " is snappy-compressed; TensorFlow writes uncompressed bundles and tensorbridge reads only those");
    TB_CHECK(type == 0, FormatError, "[tf-checkpoint] '", L_, "': the ", what, " has unknown compression type ",
             int(type));
    block.resize(size_t(h.size));
    return block;
  }

  std::vector<SSTableEntry> parse_block(const std::string& block, const std::string& what) {
    auto bad = [&](const std::string& why) {
      return FormatError(str("[tf-checkpoint] '", L_, "': the ", what, " ", why));
    };
    if (block.size() < 4) throw bad("is too small for its restart count");
    const uint8_t* base = reinterpret_cast<const uint8_t*>(block.data());
    uint64_t restarts = fixed32(base + block.size() - 4);
    if (restarts > (block.size() - 4) / 4)
      throw bad(str("claims ", restarts, " restart points in ", block.size(), " bytes"));
    const uint8_t* p = base;
    const uint8_t* end = base + block.size() - 4 - restarts * 4;
    std::vector<SSTableEntry> out;
    std::string key;
    while (p < end) {
      uint64_t shared, non_shared, value_size;
      if (!get_varint(p, end, shared) || !get_varint(p, end, non_shared) || !get_varint(p, end, value_size))
        throw bad(str("has a malformed entry after key '", key, "'"));
      if (shared > key.size()) throw bad(str("entry after '", key, "' shares ", shared, " bytes of a shorter key"));
      if (non_shared > uint64_t(end - p) || value_size > uint64_t(end - p) - non_shared)
        throw bad(str("entry after '", key, "' runs past the block's end"));
      budget_.charge_objects(1, "index entries");
      key.resize(size_t(shared));
      key.append(reinterpret_cast<const char*>(p), size_t(non_shared));
      p += non_shared;
      out.push_back({key, std::string(reinterpret_cast<const char*>(p), size_t(value_size))});
      p += value_size;
    }
    return out;
  }

  const Reader& r_;
  LoadBudget& budget_;
  const std::string& L_;
};

/** Finishes a block: restart offsets, count, then its trailer; appends it to out and returns its handle. */
BlockHandle finish_block(std::string& out, std::string block, const std::vector<uint32_t>& restarts) {
  for (uint32_t r : restarts) put_fixed32(block, r);
  put_fixed32(block, uint32_t(restarts.size()));
  BlockHandle h{out.size(), block.size()};
  block += char(0);  // no compression
  put_fixed32(block, crc32c_mask(crc32c_extend(0, block.data(), block.size())));
  out += block;
  return h;
}

std::string encode_handle(const BlockHandle& h) {
  std::string s;
  put_varint(s, h.offset);
  put_varint(s, h.size);
  return s;
}

void add_entry(std::string& block, std::vector<uint32_t>& restarts, const std::string& key, const std::string& value) {
  restarts.push_back(uint32_t(block.size()));  // a restart at every entry: no shared prefixes
  put_varint(block, 0);
  put_varint(block, key.size());
  put_varint(block, value.size());
  block += key;
  block += value;
}

bool is_regular(const std::filesystem::path& p) {
  std::error_code ec;
  return std::filesystem::is_regular_file(p, ec);
}

/** model_checkpoint_path from a folder's `checkpoint` text proto (the file name part when absolute); empty
 *  if none. The file is opened inside the folder, never through a link. */
std::string checkpoint_file_prefix(const std::filesystem::path& folder) {
  const ConfinedFolder dir(folder, "the checkpoint folder");
  auto r = dir.open_file("checkpoint", "[tf-checkpoint] folder:", false);
  std::istringstream in(r->read_string(0, size_t(std::min<uint64_t>(r->size(), 1 << 20))));
  std::string line;
  for (int n = 0; n < 10000 && std::getline(in, line); ++n) {
    const std::string tag = "model_checkpoint_path:";
    size_t at = line.find(tag);
    if (at != 0) continue;
    size_t q1 = line.find('"', tag.size());
    size_t q2 = line.rfind('"');
    if (q1 == std::string::npos || q2 <= q1) return {};
    std::string prefix = line.substr(q1 + 1, q2 - q1 - 1);
    if (!prefix.empty() && prefix[0] == '/') prefix = std::filesystem::path(prefix).filename().string();
    return prefix;
  }
  return {};
}

/** For a shard name "x.data-<5 digits>-of-<5 digits>": true, with its prefix x (empty for
 *  ".data-00000-of-00001", a bundle saved under the prefix "folder/"). */
bool shard_stem(const std::string& name, std::string& stem) {
  const size_t tail = std::string(".data-00000-of-00000").size();
  if (name.size() < tail) return false;
  const std::string t = name.substr(name.size() - tail);
  for (size_t i = 0; i < tail; ++i) {
    const bool digit = (i >= 6 && i < 11) || i >= 15;
    if (digit ? !std::isdigit(static_cast<unsigned char>(t[i])) : t[i] != ".data-00000-of-00000"[i]) return false;
  }
  stem = name.substr(0, name.size() - tail);
  return true;
}

/** Whether a file name ends in ".index", ".index" itself included (std::filesystem sees no extension in
 *  a name that starts with its only dot). */
bool is_index_name(const std::string& name) {
  return name.size() >= 6 && name.compare(name.size() - 6, 6, ".index") == 0;
}

/** True when x.data-00000-of-<n> is beside x.index. */
bool has_first_shard(const std::filesystem::path& index) {
  std::error_code ec;
  const std::filesystem::path folder = index.parent_path().empty() ? "." : index.parent_path();
  const std::string name = index.filename().string();
  const std::string want = name.substr(0, name.size() - 6) + ".data-00000-of-";
  int seen = 0;
  for (const auto& e : std::filesystem::directory_iterator(folder, ec)) {
    if (e.path().filename().string().rfind(want, 0) == 0) return true;
    if (++seen > 100000) break;
  }
  return false;
}

}  // namespace

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
#if defined(__x86_64__)
  static const bool hw = __builtin_cpu_supports("sse4.2");
  crc = hw ? crc32c_sse42(crc, p, n) : crc32c_soft(crc, p, n);
#else
  crc = crc32c_soft(crc, p, n);
#endif
  return ~crc;
}

uint32_t crc32c_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

bool has_sstable_footer(const Reader& r) {
  try {
    if (r.size() < kFooterSize) return false;
    auto b = r.read_bytes(r.size() - 8, 8);
    return (uint64_t(fixed32(b.data())) | uint64_t(fixed32(b.data() + 4)) << 32) == kTableMagic;
  } catch (...) {
    return false;
  }
}

std::vector<SSTableEntry> read_sstable(const Reader& r, LoadBudget& budget) {
  return TableReader(r, budget).read_all();
}

std::string write_sstable(const std::vector<SSTableEntry>& entries) {
  std::string out, block;
  std::vector<uint32_t> restarts;
  std::vector<std::pair<std::string, BlockHandle>> index;
  for (size_t i = 0; i < entries.size(); ++i) {
    add_entry(block, restarts, entries[i].key, entries[i].value);
    if (block.size() >= kTargetBlockSize || i + 1 == entries.size()) {
      index.emplace_back(entries[i].key, finish_block(out, std::move(block), restarts));
      block.clear();
      restarts.clear();
    }
  }
  BlockHandle meta = finish_block(out, {}, {0});
  std::string index_block;
  for (const auto& [key, h] : index) add_entry(index_block, restarts, key, encode_handle(h));
  if (restarts.empty()) restarts.push_back(0);
  BlockHandle idx = finish_block(out, std::move(index_block), restarts);
  std::string footer = encode_handle(meta) + encode_handle(idx);
  footer.resize(40, '\0');
  put_fixed32(footer, uint32_t(kTableMagic));
  put_fixed32(footer, uint32_t(kTableMagic >> 32));
  return out + footer;
}

TfBundleLocation find_tf_bundle(const Source& src) {
  namespace fs = std::filesystem;
  try {
    if (src.reader) {
      // A data shard x.data-00000-of-00001 with x.index beside it: the bundle of that index.
      if (std::string stem; shard_stem(src.path.filename().string(), stem)) {
        const fs::path folder = src.path.parent_path().empty() ? fs::path(".") : src.path.parent_path();
        if (is_regular(folder / (stem + ".index"))) return {folder, stem + ".index", false, {}};
        return {};
      }
      // x.index: the table footer, or (a damaged index) x.data-00000-of-* beside it.
      if (!is_index_name(src.path.filename().string())) return {};
      if (!has_sstable_footer(*src.reader) && !has_first_shard(src.path)) return {};
      return {src.path.parent_path().empty() ? fs::path(".") : src.path.parent_path(),
              src.path.filename().string(),
              true,
              {}};
    }
    std::error_code ec;
    if (!fs::is_directory(src.path, ec)) {
      // A prefix: x names x.index.
      fs::path index = src.path;
      index += ".index";
      if (!is_regular(index)) return {};
      return {
          src.path.parent_path().empty() ? fs::path(".") : src.path.parent_path(), index.filename().string(), true, {}};
    }
    // A folder: `checkpoint` names the latest prefix; else a single *.index; else SavedModel variables/.
    if (is_regular(src.path / "checkpoint")) {
      std::string prefix;
      try {
        prefix = checkpoint_file_prefix(src.path);
      } catch (...) {}
      if (!prefix.empty()) return {src.path, prefix + ".index", false, {}};
    }
    std::vector<std::string> found;
    int seen = 0;
    for (const auto& e : fs::directory_iterator(src.path, ec)) {
      if (is_index_name(e.path().filename().string()) && e.is_regular_file(ec))
        found.push_back(e.path().filename().string());
      if (found.size() > 20 || ++seen > 100000) break;
    }
    std::sort(found.begin(), found.end());
    if (found.size() == 1) return {src.path, found[0], false, {}};
    if (found.size() > 1) return {src.path, {}, false, found};
    if (is_regular(src.path / "variables" / "variables.index"))
      return {src.path, "variables/variables.index", false, {}};
  } catch (...) {}
  return {};
}

}  // namespace tb
