// GGUF reader and writer; layout in gguf.h, tensor types and quantizers in gguf_quants.h.
#include "formats/gguf.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "formats/adapters.h"
#include "formats/gguf_quants.h"
#include "tensor/checked.h"

namespace tb {

namespace {

using gguf::GgmlType;

constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

// GGUF metadata value types.
enum ValueType : uint32_t { U8 = 0, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 };

const char* type_name(uint32_t t) {
  static const char* names[] = {"uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
                                "bool",  "string", "array",  "uint64", "int64",  "float64"};
  return t <= F64 ? names[t] : "unknown";
}

/** Bytes a value of this type takes at least (a string: its length; an array: type and count). */
uint64_t min_value_size(uint32_t t) {
  switch (t) {
    case U8:
    case I8:
    case BOOL: return 1;
    case U16:
    case I16: return 2;
    case U32:
    case I32:
    case F32: return 4;
    case U64:
    case I64:
    case F64:
    case STRING: return 8;
    default: return 12;  // ARRAY
  }
}

/** One key-value as read: its type and exact bytes (for a GGUF writer) and its metadata text. */
struct KeyValue {
  std::string key;
  uint32_t type;
  std::vector<uint8_t> raw;
  std::string text;
};

/** What a GGUF load keeps for the writer (Checkpoint::native). */
struct GgufNative {
  std::vector<KeyValue> kvs;
};

uint64_t align_up(uint64_t v, uint64_t a) { return checked_add(v, (a - v % a) % a, "aligned offset"); }

std::string json_quote(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

template <class F>
std::string float_text(F v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

/** Reads the header front to back; every length is checked against the bytes left first. */
class Cursor {
 public:
  Cursor(const Reader& r, LoadBudget& budget) : r_(r), budget_(budget), size_(r.size()) {}
  uint64_t pos = 0;

  void need(uint64_t n, const std::string& what) const {
    TB_CHECK(n <= size_ - pos, FormatError, "[gguf] '", r_.label(), "': ", what, " needs ", n, " bytes at offset ", pos,
             " but the file ends at ", size_, " (truncated?)");
  }
  uint64_t left() const { return size_ - pos; }
  template <class T>
  T le(const std::string& what) {
    need(sizeof(T), what);
    T v = r_.read_le<T>(pos);
    pos += sizeof(T);
    return v;
  }
  std::string string(const std::string& what) {
    uint64_t n = le<uint64_t>(what + " (its length)");
    need(n, str(what, " (a string of ", n, " bytes)"));
    budget_.charge_bytes(n, what);
    std::string s = r_.read_string(pos, size_t(n));
    pos += n;
    return s;
  }
  const Reader& reader() const { return r_; }
  LoadBudget& budget() { return budget_; }

 private:
  const Reader& r_;
  LoadBudget& budget_;
  uint64_t size_;
};

/** Parses one value of type t at the cursor and appends its text (strings quoted when in arrays);
 *  what names the key in messages ("metadata 'general.name'"). */
void read_value(Cursor& c, uint32_t t, const std::string& what, uint64_t depth, bool quote, std::string& out) {
  c.budget().tick(what);
  switch (t) {
    case U8: out += std::to_string(c.le<uint8_t>(what)); break;
    case I8: out += std::to_string(int8_t(c.le<uint8_t>(what))); break;
    case U16: out += std::to_string(c.le<uint16_t>(what)); break;
    case I16: out += std::to_string(int16_t(c.le<uint16_t>(what))); break;
    case U32: out += std::to_string(c.le<uint32_t>(what)); break;
    case I32: out += std::to_string(int32_t(c.le<uint32_t>(what))); break;
    case U64: out += std::to_string(c.le<uint64_t>(what)); break;
    case I64: out += std::to_string(int64_t(c.le<uint64_t>(what))); break;
    case F32: {
      uint32_t b = c.le<uint32_t>(what);
      float f;
      std::memcpy(&f, &b, 4);
      out += float_text(f);
      break;
    }
    case F64: {
      uint64_t b = c.le<uint64_t>(what);
      double d;
      std::memcpy(&d, &b, 8);
      out += float_text(d);
      break;
    }
    case BOOL: {
      uint8_t b = c.le<uint8_t>(what);
      TB_CHECK(b <= 1, FormatError, "[gguf] '", c.reader().label(), "': ", what, ": a bool must be 0 or 1 but is ", +b);
      out += b ? "true" : "false";
      break;
    }
    case STRING: {
      std::string s = c.string(what);
      if (quote) s = json_quote(s);
      c.budget().charge_bytes(s.size(), what);
      out += s;
      break;
    }
    case ARRAY: {
      c.budget().check_depth(depth + 1, what);
      uint32_t et = c.le<uint32_t>(what + " (array element type)");
      TB_CHECK(et <= F64, FormatError, "[gguf] '", c.reader().label(), "': ", what, ": array element type ", et,
               " is not a GGUF value type (0..12)");
      uint64_t n = c.le<uint64_t>(what + " (array length)");
      const uint64_t min = min_value_size(et);
      TB_CHECK(n <= c.left() / min, FormatError, "[gguf] '", c.reader().label(), "': ", what, ": an array of ", n, " ",
               type_name(et), " needs at least ", min, " bytes each but only ", c.left(),
               " bytes are left (truncated?)");
      c.budget().charge_objects(n, what);
      // The text may be larger than the bytes (a uint8 renders as up to 5 characters): charged first.
      const uint64_t per = et == STRING || et == ARRAY ? 4 : et == BOOL ? 7 : 26;
      c.budget().charge_bytes(LoadBudget::sat_mul(n, per), what);
      out += '[';
      for (uint64_t i = 0; i < n; ++i) {
        if (i) out += ", ";
        read_value(c, et, what, depth + 1, true, out);
      }
      out += ']';
      break;
    }
    default:
      throw FormatError(
          str("[gguf] '", c.reader().label(), "': ", what, ": value type ", t, " is not a GGUF value type (0..12)"));
  }
}

struct TensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // GGUF order, fastest first
  const GgmlType* type;
  uint64_t offset, nbytes;
  int64_t numel;
};

/** "Q4_K [2, 256]": the metadata text of a tensor kept as raw blocks. */
std::string raw_description(const GgmlType& t, const Shape& shape) { return str(t.name, " ", shape_str(shape)); }

/** The fixed header after the magic: version (2 or 3, little-endian) and the two counts. */
struct Header {
  uint32_t version;
  uint64_t n_tensors, n_kv;
};

/** Reads and checks the magic, the version and the counts (each bounded by the bytes left). */
Header read_header(Cursor& c) {
  const Reader& r = c.reader();
  const std::string& L = r.label();
  const uint64_t size = r.size();
  TB_CHECK(size >= 24, FormatError, "[gguf] '", L, "': ", size,
           " bytes is too small for a GGUF header (24 bytes; truncated?)");
  TB_CHECK(r.read_string(0, 4) == "GGUF", FormatError, "[gguf] '", L, "': does not start with the magic \"GGUF\"");
  c.pos = 4;
  Header h;
  h.version = c.le<uint32_t>("the version");
  TB_CHECK(h.version != 1, UnsupportedError, "[gguf] '", L, "': GGUF version 1 (32-bit counts) is not supported; ",
           "re-save it with a current llama.cpp (versions 2 and 3 are read)");
  TB_CHECK(h.version != 0x02000000 && h.version != 0x03000000, UnsupportedError, "[gguf] '", L,
           "': a big-endian GGUF file (version ", __builtin_bswap32(h.version),
           " stored big-endian); only little-endian ", "GGUF is supported");
  TB_CHECK(h.version == 2 || h.version == 3, UnsupportedError, "[gguf] '", L, "': GGUF version ", h.version,
           " is not supported (2 and 3 are)");
  h.n_tensors = c.le<uint64_t>("the tensor count");
  h.n_kv = c.le<uint64_t>("the key-value count");
  // A key-value takes at least 13 bytes (key length, type, one byte), a tensor info at least 24.
  TB_CHECK(h.n_kv <= c.left() / 13, FormatError, "[gguf] '", L, "': the header claims ", h.n_kv,
           " key-values but the file has room for at most ", c.left() / 13, " (truncated?)");
  TB_CHECK(h.n_tensors <= c.left() / 24, FormatError, "[gguf] '", L, "': the header claims ", h.n_tensors,
           " tensors but the file has room for at most ", c.left() / 24, " (truncated?)");
  c.budget().charge_objects(h.n_kv + h.n_tensors, "the header's key-values and tensor infos");
  return h;
}

/** Reads n key-values into meta (text) and native (typed bytes, in file order); returns
 *  general.alignment (checked: a uint32 power of two) or the default 32. */
uint64_t read_key_values(Cursor& c, uint64_t n, Metadata& meta, GgufNative& native) {
  const Reader& r = c.reader();
  const std::string& L = r.label();
  uint64_t alignment = kDefaultAlignment;
  std::unordered_set<std::string> keys;
  for (uint64_t i = 0; i < n; ++i) {
    KeyValue kv;
    kv.key = c.string(str("the key of key-value ", i));
    TB_CHECK(keys.insert(kv.key).second, FormatError, "[gguf] '", L, "': metadata key '", kv.key, "' appears twice");
    kv.type = c.le<uint32_t>(str("the value type of '", kv.key, "'"));
    const uint64_t start = c.pos;
    read_value(c, kv.type, str("metadata '", kv.key, "'"), 0, false, kv.text);
    c.budget().charge_bytes(c.pos - start, "metadata values");
    kv.raw = r.read_bytes(start, size_t(c.pos - start));
    if (kv.key == "general.alignment") {
      TB_CHECK(kv.type == U32, FormatError, "[gguf] '", L, "': general.alignment must be a uint32 but is a ",
               type_name(kv.type));
      alignment = r.read_le<uint32_t>(start);
      TB_CHECK(alignment != 0 && (alignment & (alignment - 1)) == 0, FormatError, "[gguf] '", L,
               "': general.alignment must be a power of two but is ", alignment);
    }
    meta[kv.key] = kv.text;
    native.kvs.push_back(std::move(kv));
  }
  return alignment;
}

/** Reads one tensor info: a name not in names yet (added), dims (at most 4, element count in
 *  range), GGML type (its block size dividing ne[0]) and an aligned offset. */
TensorInfo read_tensor_info(Cursor& c, uint64_t i, uint64_t alignment, std::unordered_set<std::string>& names) {
  TensorInfo t;
  t.name = c.string(str("the name of tensor ", i));
  auto where = [&] { return str("[gguf] '", c.reader().label(), "': tensor '", t.name, "'"); };
  TB_CHECK(names.insert(t.name).second, FormatError, where(), " appears twice");
  const uint32_t n_dims = c.le<uint32_t>(where() + " n_dims");
  TB_CHECK(n_dims <= kMaxDims, FormatError, where(), " has n_dims ", n_dims, "; GGML tensors have at most ", kMaxDims);
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t ne = c.le<uint64_t>(where() + " dims");
    TB_CHECK(ne <= uint64_t(std::numeric_limits<int64_t>::max()), FormatError, where(), ": dimension ", ne,
             " is out of range");
    t.ne.push_back(ne);
  }
  const uint32_t type_id = c.le<uint32_t>(where() + " type");
  t.type = gguf::ggml_type(type_id);
  TB_CHECK(t.type != nullptr, FormatError, where(), " has type ", type_id, ", which is not a GGML type");
  t.offset = c.le<uint64_t>(where() + " offset");
  try {
    t.numel = 1;
    for (uint64_t ne : t.ne) t.numel = checked_mul(t.numel, int64_t(ne), "element count");
  } catch (const ShapeError&) {
    throw FormatError(
        str(where(), ": the element count of dims ", shape_str(Shape(t.ne.begin(), t.ne.end())), " overflows"));
  }
  const uint64_t ne0 = t.ne.empty() ? 1 : t.ne[0];
  TB_CHECK(ne0 % t.type->block_size == 0, FormatError, where(), " (", t.type->name, "): its first dimension ", ne0,
           " is not a multiple of the block size ", t.type->block_size);
  t.nbytes = uint64_t(t.numel) / t.type->block_size * t.type->type_size;  // cannot overflow: type_size <= 292
  TB_CHECK(t.offset % alignment == 0, FormatError, where(), ": offset ", t.offset,
           " is not a multiple of the alignment ", alignment);
  return t;
}

/** Reads the n tensor infos (names unique). */
std::vector<TensorInfo> read_tensor_infos(Cursor& c, uint64_t n, uint64_t alignment) {
  std::vector<TensorInfo> infos;
  std::unordered_set<std::string> names;
  for (uint64_t i = 0; i < n; ++i) infos.push_back(read_tensor_info(c, i, alignment, names));
  return infos;
}

/** Checks that every tensor lies inside the data section (data_size bytes) and none overlap. */
void check_data_layout(const std::vector<TensorInfo>& infos, uint64_t data_size, const std::string& L) {
  std::vector<const TensorInfo*> order;
  for (const auto& t : infos) {
    TB_CHECK(t.offset <= data_size && t.nbytes <= data_size - t.offset, FormatError, "[gguf] '", L, "': tensor '",
             t.name, "' (", t.type->name, ", ", t.numel, " elements) needs bytes [", t.offset, ", ",
             LoadBudget::sat_add(t.offset, t.nbytes), ") of the data but the data has ", data_size,
             " bytes (truncated?)");
    order.push_back(&t);
  }
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->offset != b->offset ? a->offset < b->offset : a->nbytes < b->nbytes;  // empty tensors first
  });
  for (size_t i = 1; i < order.size(); ++i)
    TB_CHECK(order[i]->offset >= order[i - 1]->offset + order[i - 1]->nbytes, FormatError, "[gguf] '", L, "': tensor '",
             order[i]->name, "' at data offset ", order[i]->offset, " overlaps tensor '", order[i - 1]->name,
             "', which ends at ", order[i - 1]->offset + order[i - 1]->nbytes);
}

/** The bytes of a tensor at file offset `at`: mapped when allowed and aligned for the element size,
 *  else read into memory charged to the budget. */
std::shared_ptr<Storage> tensor_bytes(const Reader& r, const TensorInfo& t, uint64_t at, size_t align,
                                      const LoadOptions& opts, LoadBudget& budget) {
  const size_t nbytes = size_t(t.nbytes);
  std::shared_ptr<Storage> st;
  if (opts.mmap) {
    st = r.map(at, nbytes);
    if (st && nbytes > 0 && reinterpret_cast<uintptr_t>(st->data()) % align != 0) st = nullptr;
  }
  if (!st) {
    budget.charge_bytes(nbytes, str("tensor '", t.name, "'"));
    st = Storage::allocate(nbytes, false);
    if (nbytes) r.read_at(at, st->data(), nbytes);
  }
  return st;
}

/** One tensor as loaded: a plain type as its dtype (zero-copy when mapped), a quantized one as
 *  float32 or, with keep_quantized, as its raw uint8 blocks described in meta. */
Tensor load_tensor(const Reader& r, const TensorInfo& t, uint64_t at, const LoadOptions& opts, LoadBudget& budget,
                   Metadata& meta) {
  const Shape shape(t.ne.rbegin(), t.ne.rend());
  if (t.type->native) {
    const DType dt = *t.type->native;
    return Tensor(tensor_bytes(r, t, at, std::min<size_t>(dtype_size(dt), 8), opts, budget), dt, shape,
                  contiguous_strides(shape), 0);
  }
  if (opts.keep_quantized) {
    meta[kGgufQuantizedKey + t.name] = raw_description(*t.type, shape);
    return Tensor(tensor_bytes(r, t, at, 1, opts, budget), DType::U8, {int64_t(t.nbytes)}, {1}, 0);
  }
  TB_CHECK(t.type->dequantizes, UnsupportedError, "[gguf] '", r.label(), "': tensor '", t.name, "' has type ",
           t.type->name, ", which tensorbridge cannot dequantize (it can: ", gguf::dequantizable_names(),
           "); pass --keep-quantized to keep its raw blocks");
  const size_t out_bytes = checked_nbytes(t.numel, 4, str("tensor '", t.name, "'"));
  budget.charge_bytes(out_bytes, str("tensor '", t.name, "' dequantized to float32"));
  std::shared_ptr<Storage> blocks = tensor_bytes(r, t, at, 1, opts, budget);
  const gguf::GgmlType* type = t.type;
  const size_t n_blocks = size_t(t.nbytes) / type->type_size;
  auto decode = [type, n_blocks, blocks](uint8_t* out) {
    gguf::dequantize(*type, blocks->data(), n_blocks, reinterpret_cast<float*>(out));
  };
  std::shared_ptr<Storage> st;
  if (opts.deferred_decoding) {
    st = Storage::deferred(out_bytes, decode);
  } else {
    st = Storage::allocate(out_bytes, false);
    decode(st->data());
  }
  return Tensor(std::move(st), DType::F32, shape, contiguous_strides(shape), 0);
}

}  // namespace

Checkpoint load_gguf(const std::shared_ptr<Reader>& reader, const LoadOptions& opts) {
  const Reader& r = *reader;
  const std::string& L = r.label();
  const uint64_t size = r.size();
  LoadBudget budget(opts.limits, L, size);
  Cursor c(r, budget);
  const Header h = read_header(c);

  Checkpoint ck;
  ck.format = "gguf";
  auto native = std::make_shared<GgufNative>();
  const uint64_t alignment = read_key_values(c, h.n_kv, ck.metadata, *native);
  const std::vector<TensorInfo> infos = read_tensor_infos(c, h.n_tensors, alignment);

  // Data: aligned after the infos; tensors inside the file and not overlapping.
  const uint64_t data_start = align_up(c.pos, alignment);
  if (!infos.empty())
    TB_CHECK(data_start <= size, FormatError, "[gguf] '", L, "': the tensor data should start at offset ", data_start,
             " but the file ends at ", size, " (truncated?)");
  check_data_layout(infos, infos.empty() ? 0 : size - data_start, L);

  TB_CHECK(host_little_endian(), UnsupportedError, "[gguf] '", L,
           "': reading GGUF on a big-endian host is not supported");
  ck.root = Value::dict();
  std::map<std::string, size_t> type_counts;
  for (const auto& t : infos) {
    ++type_counts[std::string(t.type->name)];
    Tensor out = load_tensor(r, t, data_start + t.offset, opts, budget, ck.metadata);
    ck.root.set_item(Value::string(t.name), Value::tensor(std::move(out)));
  }
  ck.native.format = "gguf";
  ck.native.data = native;
  ck.info.emplace_back("gguf version", std::to_string(h.version));
  ck.info.emplace_back("alignment", std::to_string(alignment));
  std::string types;
  for (const auto& [name, n] : type_counts) types += str(types.empty() ? "" : ", ", name, " x", n);
  if (!types.empty()) ck.info.emplace_back("tensor types", types);
  return ck;
}

namespace {

/** One tensor as it will be written: its GGML type, GGUF dims (fastest first) and bytes. */
struct OutTensor {
  std::string name;
  const GgmlType* type;
  std::vector<uint64_t> ne;
  Tensor t;                    // written as is (plain type or raw blocks) ...
  bool quantize_q8_0 = false;  // ... or quantized from float32 while writing
  uint64_t nbytes = 0, offset = 0;
};

void write_string(Writer& w, const std::string& s) {
  w.write_le<uint64_t>(s.size());
  w.write(s);
}

/** "Q4_K [2, 256]" -> type and shape; throws naming the tensor when malformed. */
std::pair<const GgmlType*, Shape> parse_raw_description(const std::string& name, const std::string& text) {
  auto bad = [&](const std::string& why) {
    return FormatError(str("[gguf] tensor '", name, "': metadata '", kGgufQuantizedKey, name, "' = '", text,
                           "' must be \"TYPE [d0, d1, ...]\" (", why, ")"));
  };
  size_t sp = text.find(' ');
  if (sp == std::string::npos || text.size() < sp + 3 || text[sp + 1] != '[' || text.back() != ']') throw bad("layout");
  const GgmlType* t = gguf::ggml_type_by_name(text.substr(0, sp));
  if (!t) throw bad("unknown GGML type");
  Shape shape;
  std::string dims = text.substr(sp + 2, text.size() - sp - 3);
  for (size_t p = 0; p < dims.size();) {
    while (p < dims.size() && (dims[p] == ' ' || dims[p] == ',')) ++p;
    if (p == dims.size()) break;
    int64_t v = 0;
    auto res = std::from_chars(dims.data() + p, dims.data() + dims.size(), v);
    if (res.ec != std::errc() || v < 0) throw bad("dimension");
    shape.push_back(v);
    p = size_t(res.ptr - dims.data());
  }
  if (shape.size() > kMaxDims) throw bad("more than 4 dims");
  return {t, shape};
}

/** The key-values to write: a GGUF source's own (typed, unchanged ones byte for byte) in its order,
 *  then any other metadata as strings; general.alignment as the uint32 it must be. */
std::vector<KeyValue> output_key_values(const Checkpoint& ck, const Metadata& meta, uint64_t& alignment) {
  std::vector<KeyValue> out;
  std::unordered_set<std::string> done;
  auto add_string = [&](const std::string& k, const std::string& v) {
    KeyValue kv{k, STRING, {}, v};
    uint64_t n = v.size();
    for (int i = 0; i < 8; ++i) kv.raw.push_back(uint8_t(n >> (8 * i)));
    kv.raw.insert(kv.raw.end(), v.begin(), v.end());
    out.push_back(std::move(kv));
  };
  auto skip = [](const std::string& k) { return k.rfind(kGgufQuantizedKey, 0) == 0; };
  if (ck.native.format == "gguf" && ck.native.data) {
    const auto& native = *std::static_pointer_cast<const GgufNative>(ck.native.data);
    for (const auto& kv : native.kvs) {
      auto it = meta.find(kv.key);
      if (it == meta.end() || it->second != kv.text) continue;
      out.push_back(kv);
      done.insert(kv.key);
    }
  }
  for (const auto& [k, v] : meta) {
    if (done.count(k) || skip(k)) continue;
    if (k == "general.alignment") {
      uint32_t a = 0;
      auto res = std::from_chars(v.data(), v.data() + v.size(), a);
      TB_CHECK(res.ec == std::errc() && res.ptr == v.data() + v.size() && a != 0 && (a & (a - 1)) == 0,
               UnsupportedError, "[gguf] metadata general.alignment must be a power of two but is '", v, "'");
      KeyValue kv{k, U32, {uint8_t(a), uint8_t(a >> 8), uint8_t(a >> 16), uint8_t(a >> 24)}, v};
      out.push_back(std::move(kv));
      continue;
    }
    add_string(k, v);
  }
  for (const auto& kv : out)
    if (kv.key == "general.alignment")
      alignment =
          uint64_t(kv.raw[0]) | uint64_t(kv.raw[1]) << 8 | uint64_t(kv.raw[2]) << 16 | uint64_t(kv.raw[3]) << 24;
  return out;
}

}  // namespace

void write_gguf(const Checkpoint& ckpt, const std::filesystem::path& path, const GgufWriteOptions& opts) {
  TB_CHECK(host_little_endian(), UnsupportedError, "[gguf] writing on a big-endian host is not supported");
  const StateDict sd = ckpt.named_tensors();
  const std::string& quantize = opts.quantize;
  uint64_t alignment = kDefaultAlignment;
  const std::vector<KeyValue> kvs = output_key_values(ckpt, sd.metadata, alignment);

  std::vector<OutTensor> tensors;
  for (const auto& [name, t] : sd) {
    OutTensor o{name, nullptr, {}, t};
    auto raw = sd.metadata.find(kGgufQuantizedKey + name);
    if (raw == sd.metadata.end())
      if (auto old = ckpt.native.renamed_from.find(name); old != ckpt.native.renamed_from.end())
        raw = sd.metadata.find(kGgufQuantizedKey + old->second);
    Shape shape = t.shape();
    if (raw != sd.metadata.end()) {
      auto [type, logical] = parse_raw_description(name, raw->second);
      shape = logical;
      o.type = type;
      int64_t numel = checked_numel(logical);
      const uint64_t ne0 = logical.empty() ? 1 : uint64_t(logical.back());
      TB_CHECK(ne0 % type->block_size == 0, FormatError, "[gguf] tensor '", name, "': ", raw->second,
               " has a last dimension that is not a multiple of the block size ", type->block_size);
      const uint64_t want = uint64_t(numel) / type->block_size * type->type_size;
      TB_CHECK(t.dtype() == DType::U8 && t.dim() == 1 && uint64_t(t.numel()) == want, FormatError, "[gguf] tensor '",
               name, "' should hold the raw blocks of ", raw->second, " (uint8 [", want, "]) but is ",
               dtype_name(t.dtype()), shape_str(t.shape()));
    } else if (quantize == "q8_0" && is_floating(t.dtype()) && t.dim() >= 2 && t.shape().back() % 32 == 0) {
      o.type = gguf::ggml_type(8);
      o.quantize_q8_0 = true;
    } else {
      o.type = gguf::ggml_type_for(t.dtype());
      TB_CHECK(o.type != nullptr, UnsupportedError, "[gguf] tensor '", name, "' has dtype ", dtype_name(t.dtype()),
               ", which GGUF cannot store (float32, float16, bfloat16, float64, int8, int16, int32, int64); convert ",
               "it first (--dtype)");
    }
    TB_CHECK(shape.size() <= kMaxDims, UnsupportedError, "[gguf] tensor '", name, "' has ", shape.size(),
             " dims; GGUF (GGML) tensors have at most ", kMaxDims);
    o.ne.assign(shape.rbegin(), shape.rend());
    o.nbytes = o.quantize_q8_0 ? uint64_t(t.numel()) / 32 * 34 : t.nbytes();
    tensors.push_back(std::move(o));
  }
  uint64_t off = 0;
  for (auto& o : tensors) {
    o.offset = off;
    off = align_up(checked_add(off, o.nbytes, "GGUF data size"), alignment);
  }

  AtomicFileWriter w(path, opts.overwrite);
  try {
    w.write("GGUF");
    w.write_le<uint32_t>(3);
    w.write_le<uint64_t>(tensors.size());
    w.write_le<uint64_t>(kvs.size());
    for (const auto& kv : kvs) {
      write_string(w, kv.key);
      w.write_le<uint32_t>(kv.type);
      w.write(kv.raw.data(), kv.raw.size());
    }
    for (const auto& o : tensors) {
      write_string(w, o.name);
      w.write_le<uint32_t>(uint32_t(o.ne.size()));
      for (uint64_t ne : o.ne) w.write_le<uint64_t>(ne);
      w.write_le<uint32_t>(o.type->id);
      w.write_le<uint64_t>(o.offset);
    }
    // The data section starts aligned; a file without tensors has none and ends here (as ggml writes it).
    if (!tensors.empty()) w.write_zeros(size_t((alignment - w.tell() % alignment) % alignment));
    const uint64_t data_start = w.tell();
    for (const auto& o : tensors) {
      TB_ASSERT(w.tell() == data_start + o.offset, "gguf tensor offset");
      if (o.quantize_q8_0) {
        Tensor f = o.t.to(DType::F32).contiguous();
        std::vector<uint8_t> blocks(size_t(o.nbytes));
        gguf::quantize_q8_0(f.data_as<float>(), size_t(f.numel()), blocks.data());
        w.write(blocks.data(), blocks.size());
      } else {
        w.write_tensor(o.t);
      }
      w.write_zeros(size_t((alignment - w.tell() % alignment) % alignment));
    }
  } catch (Error& e) {
    e.add_context(str("while writing '", path.string(), "'"));
    throw;
  }
  w.commit();
}

void save_gguf(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts) {
  gguf_format().save(ckpt, path, opts);
}

const FormatAdapter& gguf_format() {
  static const FormatAdapter a = with_writer<GgufWriteOptions>(
      {.name = "gguf",
       .description = "GGUF v2/v3 (llama.cpp; quantized tensors dequantized to float32 or kept with --keep-quantized)",
       .extensions = {".gguf"},
       .sniff =
           [](const Source& s) { return s.reader && s.reader->size() >= 4 && s.reader->read_string(0, 4) == "GGUF"; },
       .load =
           [](const Source& s, const LoadOptions& o) {
             TB_CHECK(s.reader != nullptr, FormatError, "[gguf] '", s.label(), "' is a folder, not a GGUF file");
             return load_gguf(s.reader, o);
           }},
      {choice_option<GgufWriteOptions>(
          "quantize", &GgufWriteOptions::quantize, {"q8_0"},
          "q8_0 stores float tensors of 2+ dims as Q8_0 (--dtype q8_0); default: as given")},
      write_gguf);
  return a;
}

}  // namespace tb
