// safetensors reader and writer; layout in safetensors.h.
#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>

#include "formats/adapters.h"
#include "formats/detail/open_beneath.h"
#include "formats/naming.h"
#include "formats/sharded.h"

namespace tb {

namespace {

using ojson = nlohmann::ordered_json;
using fs_path = std::filesystem::path;
constexpr uint64_t kMaxHeader = 100'000'000;

/** Position of a dtype in the reference Rust `Dtype` enum (the writer sorts by it, descending). */
int reference_rank(DType t) {
  switch (t) {
    case DType::Bool: return 0;
    case DType::U8: return 4;
    case DType::I8: return 5;
    case DType::F8E5M2: return 6;
    case DType::F8E4M3FN: return 7;
    case DType::I16: return 11;
    case DType::U16: return 12;
    case DType::F16: return 13;
    case DType::BF16: return 14;
    case DType::I32: return 15;
    case DType::U32: return 16;
    case DType::F32: return 17;
    case DType::C64: return 18;
    case DType::F64: return 19;
    case DType::I64: return 20;
    case DType::U64: return 21;
    default: return -1;
  }
}

/** JSON string exactly as serde_json writes it (no escaping of '/' or non-ASCII). */
void json_string(std::string& out, const std::string& s) {
  static const char* hex = "0123456789abcdef";
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += char(c);
        }
    }
  }
  out += '"';
}

/** SAX handler recording the top-level keys of a JSON object in file order (nothing else is kept). */
struct TopKeys : nlohmann::json_sax<nlohmann::json> {
  std::vector<std::string> keys;
  int depth = 0;
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return ++depth, true; }
  bool end_object() override { return --depth, true; }
  bool start_array(std::size_t) override { return ++depth, true; }
  bool end_array() override { return --depth, true; }
  bool key(string_t& k) override {
    if (depth == 1) keys.push_back(k);
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }
};

struct Info {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

/** The parsed header: its JSON, its top-level keys in file order and its length in bytes. */
struct Header {
  nlohmann::json json;
  std::vector<std::string> keys;
  uint64_t length = 0;
};

/** Reads and parses the length-prefixed JSON header, refusing duplicate top-level keys. */
Header read_header(const Reader& r, const LoadOptions& opts) {
  const std::string& L = r.label();
  const uint64_t size = r.size();
  TB_CHECK(size >= 8, FormatError, "[safetensors] '", L, "': ", size, " bytes is too small (the header length alone ",
           "takes 8)");
  const uint64_t n = r.read_le<uint64_t>(0);
  TB_CHECK(n <= kMaxHeader, FormatError, "[safetensors] '", L, "': header length ", n, " is above the limit of ",
           kMaxHeader, " bytes (HeaderTooLarge)");
  TB_CHECK(n <= size - 8, FormatError, "[safetensors] '", L, "' is truncated: the header claims ", n,
           " bytes but the file has ", size - 8, " after the length");
  TB_CHECK(n >= 2, FormatError, "[safetensors] '", L, "': header of ", n, " bytes cannot hold a JSON object");
  std::string text = r.read_string(8, size_t(n));
  TB_CHECK(text[0] == '{', FormatError, "[safetensors] '", L, "': the header must start with '{' but starts with '",
           text.substr(0, 16), "'");

  // Duplicate top-level keys are refused (nlohmann keeps the last one silently). The header is parsed
  // into a sorted-map json (ordered_json looks every key up linearly: quadratic in the tensor count)
  // and the file's key order is kept here.
  LoadBudget budget(opts.limits, L, size);
  Header h;
  h.length = n;
  try {
    h.json = nlohmann::json::parse(text);
    TopKeys sax;
    nlohmann::json::sax_parse(text, &sax);
    h.keys = std::move(sax.keys);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(str("[safetensors] '", L, "': the header is not valid UTF-8 JSON (", e.what(), ")"));
  }
  TB_CHECK(h.keys.size() <= (uint64_t(1) << 24), FormatError, "[safetensors] '", L, "': too many entries");
  budget.charge_objects(h.keys.size(), "the header's entries");
  std::string duplicate;
  std::unordered_set<std::string_view> seen;
  for (const auto& k : h.keys)
    if (!seen.insert(k).second && duplicate.empty()) duplicate = k;
  TB_CHECK(duplicate.empty(), FormatError, "[safetensors] '", L, "': the header names '", duplicate, "' twice");
  TB_CHECK(h.json.is_object(), FormatError, "[safetensors] '", L, "': the header must be a JSON object");
  return h;
}

/** Copies the string-valued `__metadata__` object into `out` (null means none). */
void read_metadata(const std::string& L, const nlohmann::json& v, Metadata& out) {
  if (v.is_null()) return;  // serde reads null as "no metadata"
  TB_CHECK(v.is_object(), FormatError, "[safetensors] '", L, "': __metadata__ must be an object of strings");
  for (auto m = v.begin(); m != v.end(); ++m) {
    TB_CHECK(m.value().is_string(), FormatError, "[safetensors] '", L, "': __metadata__ value of '", m.key(),
             "' must be a string but is ", m.value().dump());
    out[m.key()] = m.value().get<std::string>();
  }
}

/** Checks one tensor entry of the header (dtype, shape, data_offsets and their agreement). */
Info parse_entry(const std::string& L, const std::string& name, const nlohmann::json& v) {
  auto where = [&] { return str("[safetensors] '", L, "': tensor '", name, "'"); };
  TB_CHECK(v.is_object(), FormatError, where(), " must be an object but is ", v.dump().substr(0, 60));
  auto d = v.find("dtype");
  auto s = v.find("shape");
  auto o = v.find("data_offsets");
  TB_CHECK(d != v.end() && s != v.end() && o != v.end(), FormatError, where(),
           " needs \"dtype\", \"shape\" and \"data_offsets\" but has ", v.dump().substr(0, 120));
  TB_CHECK(d->is_string(), FormatError, where(), ": dtype must be a string but is ", d->dump());
  auto dt = dtype_from_safetensors(d->get<std::string>());
  TB_CHECK(dt.has_value(), UnsupportedError, where(), ": dtype '", d->get<std::string>(),
           "' is not supported (BOOL, U8..U64, I8..I64, F16, BF16, F32, F64, C64, F8_E4M3, F8_E5M2)");
  TB_CHECK(s->is_array() && s->size() <= 64, FormatError, where(), ": shape must be an array of at most 64 ",
           "non-negative integers but is ", s->dump().substr(0, 80));
  Info info{name, *dt, {}, 0, 0};
  for (const auto& dim : *s) {
    TB_CHECK(dim.is_number_unsigned() || (dim.is_number_integer() && dim.get<int64_t>() >= 0), FormatError, where(),
             ": shape must hold non-negative integers but is ", s->dump().substr(0, 80));
    uint64_t u = dim.get<uint64_t>();
    TB_CHECK(u <= uint64_t(std::numeric_limits<int64_t>::max()), FormatError, where(), ": dimension ", u, " overflows");
    info.shape.push_back(int64_t(u));
  }
  TB_CHECK(o->is_array() && o->size() == 2 && (*o)[0].is_number_unsigned() && (*o)[1].is_number_unsigned(), FormatError,
           where(), ": data_offsets must be [BEGIN, END] non-negative integers but is ", o->dump().substr(0, 80));
  info.begin = (*o)[0].get<uint64_t>();
  info.end = (*o)[1].get<uint64_t>();
  TB_CHECK(info.end >= info.begin, FormatError, where(), ": data_offsets [", info.begin, ", ", info.end,
           "] end before they begin");
  int64_t numel;
  try {
    numel = checked_numel(info.shape);
  } catch (const ShapeError&) {
    throw FormatError(str(where(), ": shape ", shape_str(info.shape), " overflows"));
  }
  uint64_t isz = dtype_size(info.dtype);
  TB_CHECK(numel == 0 || uint64_t(numel) <= std::numeric_limits<uint64_t>::max() / isz, FormatError, where(),
           ": shape ", shape_str(info.shape), " overflows");
  uint64_t need = uint64_t(numel) * isz;
  TB_CHECK(need == info.end - info.begin, FormatError, where(), " (", d->get<std::string>(), " ", shape_str(info.shape),
           ") needs ", need, " bytes but data_offsets give ", info.end - info.begin);
  return info;
}

/** Checks that the offsets, sorted, start at 0, have no holes or overlaps and cover the buffer exactly. */
void check_offsets(const std::string& L, const std::vector<Info>& infos, uint64_t buffer) {
  std::vector<const Info*> order;
  for (const auto& i : infos) order.push_back(&i);
  std::stable_sort(order.begin(), order.end(), [](const Info* a, const Info* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t expect = 0;
  for (const Info* i : order) {
    TB_CHECK(i->begin == expect, FormatError, "[safetensors] '", L, "': tensor '", i->name, "' starts at byte ",
             i->begin, " of the data buffer but the previous tensor ends at ", expect,
             i->begin > expect ? " (a hole)" : " (overlapping tensors)");
    expect = i->end;
  }
  TB_CHECK(expect == buffer, FormatError, "[safetensors] '", L, "': the tensors cover ", expect,
           " bytes but the data buffer has ", buffer,
           expect < buffer ? " (trailing bytes are not allowed)" : "; truncated download?");
}

/** One tensor's data: a zero-copy view when mapped and aligned, a copy otherwise. */
Value read_tensor(const Reader& r, const Info& i, uint64_t base, const LoadOptions& opts) {
  const bool swap = !host_little_endian();
  size_t nbytes = size_t(i.end - i.begin);
  std::shared_ptr<Storage> st;
  if (opts.mmap && !swap) {
    st = r.map(base + i.begin, nbytes);
    size_t align = std::min<size_t>(dtype_size(i.dtype), 8);
    if (st && nbytes > 0 && reinterpret_cast<uintptr_t>(st->data()) % align != 0) st = nullptr;
  }
  if (!st) {
    st = Storage::allocate(nbytes, false);
    if (nbytes) r.read_at(base + i.begin, st->data(), nbytes);
    if (swap) byteswap_elements(st->data(), i.dtype, nbytes / dtype_size(i.dtype));
  }
  return Value::tensor(Tensor(std::move(st), i.dtype, i.shape, contiguous_strides(i.shape), 0));
}

/** Adds the aliases recorded by our writer (the same tensor under another name) and drops their metadata key. */
void apply_aliases(const std::string& L, Checkpoint& c, std::unordered_map<std::string, Value>& by_name) {
  auto a = c.metadata.find(kSafetensorsAliasKey);
  if (a == c.metadata.end()) return;
  ojson aliases;
  try {
    aliases = ojson::parse(a->second);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(
        str("[safetensors] '", L, "': metadata '", kSafetensorsAliasKey, "' is not JSON (", e.what(), ")"));
  }
  TB_CHECK(aliases.is_object(), FormatError, "[safetensors] '", L, "': metadata '", kSafetensorsAliasKey,
           "' must be a JSON object alias -> name");
  for (auto it = aliases.begin(); it != aliases.end(); ++it) {
    TB_CHECK(it.value().is_string(), FormatError, "[safetensors] '", L, "': alias '", it.key(), "' must name a tensor");
    auto target = by_name.find(it.value().get<std::string>());
    TB_CHECK(target != by_name.end(), FormatError, "[safetensors] '", L, "': alias '", it.key(), "' refers to '",
             it.value().get<std::string>(), "', which is not in the file");
    TB_CHECK(!by_name.count(it.key()), FormatError, "[safetensors] '", L, "': alias '", it.key(),
             "' is also a tensor name");
    c.root.set_item(Value::string(naming::decode_name(it.key(), naming::Target::Safetensors)), target->second);
    by_name.emplace(it.key(), target->second);
  }
  c.metadata.erase(a);
  c.info.emplace_back("tied tensors", std::to_string(aliases.size()));
}

}  // namespace

Checkpoint load_safetensors(const std::shared_ptr<Reader>& reader, const LoadOptions& opts) {
  const Reader& r = *reader;
  const std::string& L = r.label();
  const Header head = read_header(r, opts);
  const uint64_t n = head.length;

  Checkpoint c;
  c.format = "safetensors";
  std::vector<Info> infos;
  for (const std::string& name : head.keys) {
    const nlohmann::json& v = head.json.at(name);
    if (name == "__metadata__")
      read_metadata(L, v, c.metadata);
    else
      infos.push_back(parse_entry(L, name, v));
  }
  check_offsets(L, infos, r.size() - 8 - n);

  c.root = Value::dict();
  std::unordered_map<std::string, Value> by_name;
  for (const auto& i : infos) {
    Value t = read_tensor(r, i, 8 + n, opts);
    by_name.emplace(i.name, t);
    c.root.set_item(Value::string(naming::decode_name(i.name, naming::Target::Safetensors)), t);
  }
  apply_aliases(L, c, by_name);
  c.info.emplace_back("header bytes", std::to_string(n));
  if ((8 + n) % 8 != 0) c.info.emplace_back("alignment", "unaligned data (header not padded; pre-0.3.1 writer)");
  return c;
}

Checkpoint load_safetensors(const Source& src, const LoadOptions& opts) {
  const fs_path index = find_shard_index(src);
  if (src.reader) return index.empty() ? load_safetensors(src.reader, opts) : load_sharded(index, opts);
  // A folder: what it holds is opened inside it, never through a link.
  if (!index.empty()) return load_sharded_folder(src.path, index.filename().string(), opts);
  const ConfinedFolder folder(src.path, "the checkpoint folder");
  TB_CHECK(folder.kind("model.safetensors") != ConfinedFolder::Kind::Missing, FormatError, "[safetensors] folder '",
           src.label(), "' has neither an *.index.json nor a model.safetensors");
  return load_safetensors(
      folder.open_file("model.safetensors", str("[safetensors] folder '", src.label(), "':"), opts.mmap), opts);
}

void write_safetensors(Writer& w, const StateDict& sd, const Metadata& metadata) {
  TB_CHECK(host_little_endian(), UnsupportedError, "[safetensors] writing on a big-endian host is not supported");
  // Tied tensors: the same view of the same storage is written once.
  struct Item {
    std::string name;
    const Tensor* t;
  };
  std::vector<Item> items;
  std::map<std::string, std::string> aliases;
  std::map<std::pair<const void*, int64_t>, std::vector<std::pair<const Tensor*, std::string>>> firsts;
  // Header keys follow the naming rule (formats/naming.h): only '%', "" and "__metadata__" change.
  const std::vector<std::string> stored = naming::stored_names(sd, naming::Target::Safetensors);
  for (size_t index = 0; index < sd.size(); ++index) {
    const Tensor& t = sd.entries()[index].second;
    const std::string& name = stored[index];
    TB_CHECK(reference_rank(t.dtype()) >= 0, UnsupportedError, "[safetensors] tensor '", name, "' has dtype ",
             dtype_name(t.dtype()), ", which safetensors cannot store (no token for it); convert it first (e.g. ",
             "complex128 -> complex64)");
    const std::string* same = nullptr;
    auto& bucket = firsts[{t.storage().get(), t.byte_offset()}];
    for (const auto& [f, fname] : bucket)
      if (f->shares_storage(t) && f->dtype() == t.dtype() && f->shape() == t.shape() && f->strides() == t.strides()) {
        same = &fname;
        break;
      }
    if (same) {
      aliases[name] = *same;
      continue;
    }
    if (t.storage()) bucket.emplace_back(&t, name);
    items.push_back({name, &t});
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    int ra = reference_rank(a.t->dtype()), rb = reference_rank(b.t->dtype());
    return ra != rb ? ra > rb : a.name < b.name;
  });
  Metadata meta = metadata;
  if (!aliases.empty()) {
    std::string a = "{";
    for (const auto& [k, v] : aliases) {
      if (a.size() > 1) a += ',';
      json_string(a, k);
      a += ':';
      json_string(a, v);
    }
    meta[kSafetensorsAliasKey] = a + "}";
  }
  std::string h = "{";
  if (!meta.empty()) {
    h += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : meta) {
      if (!first) h += ',';
      first = false;
      json_string(h, k);
      h += ':';
      json_string(h, v);
    }
    h += "}";
  }
  uint64_t off = 0;
  for (const auto& it : items) {
    if (h.size() > 1) h += ',';
    json_string(h, it.name);
    h += ":{\"dtype\":";
    json_string(h, std::string(info(it.t->dtype()).safetensors));
    h += ",\"shape\":[";
    for (size_t i = 0; i < it.t->shape().size(); ++i) h += (i ? "," : "") + std::to_string(it.t->shape()[i]);
    uint64_t nb = it.t->nbytes();
    h += "],\"data_offsets\":[" + std::to_string(off) + "," + std::to_string(off + nb) + "]}";
    off += nb;
  }
  h += "}";
  h.append((8 - h.size() % 8) % 8, ' ');
  TB_CHECK(h.size() <= kMaxHeader, UnsupportedError, "[safetensors] the header would take ", h.size(),
           " bytes, above the reference limit of ", kMaxHeader, "; shard the checkpoint");
  w.write_le<uint64_t>(h.size());
  w.write(h);
  for (const auto& it : items) w.write_tensor(*it.t);
}

Metadata safetensors_metadata(Metadata metadata, const std::string& format_entry) {
  if (format_entry != "none" && !metadata.count("format")) metadata["format"] = format_entry;
  return metadata;
}

void write_safetensors_file(const Checkpoint& ckpt, const std::filesystem::path& path,
                            const SafetensorsWriteOptions& opts) {
  const StateDict sd = ckpt.named_tensors();
  const Metadata meta = safetensors_metadata(sd.metadata, opts.format);
  if (opts.shard_size > 0) {
    try {
      save_sharded_safetensors(sd, meta, path, opts.shard_size, opts.overwrite);
    } catch (Error& e) {
      e.add_context(str("while writing shards for '", path.string(), "'"));
      throw;
    }
    return;
  }
  write_safetensors_atomically(sd, meta, path, opts.overwrite);
}

void write_safetensors_atomically(const StateDict& sd, const Metadata& metadata, const std::filesystem::path& path,
                                  bool overwrite) {
  AtomicFileWriter w(path, overwrite);
  try {
    write_safetensors(w, sd, metadata);
  } catch (Error& e) {
    e.add_context(str("while writing '", path.string(), "'"));
    throw;
  }
  w.commit();
}

void save_safetensors(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts) {
  safetensors_format().save(ckpt, path, opts);
}

namespace {
bool sniff_safetensors(const Source& s) {
  if (!find_shard_index(s).empty()) return true;
  if (!s.reader) {
    std::error_code ec;
    return std::filesystem::is_regular_file(s.path / "model.safetensors", ec);
  }
  if (s.reader->size() < 10) return false;
  uint64_t n = s.reader->read_le<uint64_t>(0);
  if (n < 2 || n > s.reader->size() - 8 || n > kMaxHeader) return false;
  return s.reader->read_string(8, 1) == "{";
}

OptionTable<SafetensorsWriteOptions> safetensors_options() {
  using O = SafetensorsWriteOptions;
  return {text_option<O>("format", &O::format, "the __metadata__ format entry (default pt; none leaves it out)"),
          {"shard_size", "shards of at most this size plus an index (--shard-size)", [](O& o, const std::string& v) {
             o.shard_size = parse_shard_size(v);
             TB_CHECK(o.shard_size > 0, UnsupportedError, "shard size must be positive");
           }}};
}
}  // namespace

const FormatAdapter& safetensors_format() {
  static const FormatAdapter a = with_writer<SafetensorsWriteOptions>(
      {.name = "safetensors",
       .description = "safetensors (zero-copy; tied weights kept as aliases; sharded index.json or folder)",
       .extensions = {".safetensors"},
       .sniff = sniff_safetensors,
       .load = [](const Source& s, const LoadOptions& o) { return load_safetensors(s, o); }},
      safetensors_options(), write_safetensors_file);
  return a;
}

}  // namespace tb
