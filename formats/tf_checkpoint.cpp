// TensorFlow checkpoint bundle reader and writer; layout in tf_checkpoint.h, the table in tf_sstable.h.
#include "formats/tf_checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <deque>
#include <limits>
#include <set>
#include <unordered_map>

#include "formats/adapters.h"
#include "formats/detail/open_beneath.h"
#include "formats/naming.h"
#include "formats/tf_checkpoint_graph.h"
#include "formats/tf_sstable.h"
#include "tensor/checked.h"
#include "tf/tf_checkpoint.pb.h"

namespace tb {

namespace {

namespace fs = std::filesystem;
constexpr const char* kObjectGraphKey = "_CHECKPOINTABLE_OBJECT_GRAPH";
constexpr const char* kValueSuffix = "/.ATTRIBUTES/VARIABLE_VALUE";

struct DTypePair {
  tfpb::DataType tf;
  DType ours;
};
constexpr DTypePair kDTypes[] = {
    {tfpb::DT_FLOAT, DType::F32},
    {tfpb::DT_DOUBLE, DType::F64},
    {tfpb::DT_HALF, DType::F16},
    {tfpb::DT_BFLOAT16, DType::BF16},
    {tfpb::DT_INT8, DType::I8},
    {tfpb::DT_INT16, DType::I16},
    {tfpb::DT_INT32, DType::I32},
    {tfpb::DT_INT64, DType::I64},
    {tfpb::DT_UINT8, DType::U8},
    {tfpb::DT_UINT16, DType::U16},
    {tfpb::DT_UINT32, DType::U32},
    {tfpb::DT_UINT64, DType::U64},
    {tfpb::DT_BOOL, DType::Bool},
    {tfpb::DT_COMPLEX64, DType::C64},
    {tfpb::DT_COMPLEX128, DType::C128},
    {tfpb::DT_FLOAT8_E5M2, DType::F8E5M2},
    {tfpb::DT_FLOAT8_E4M3FN, DType::F8E4M3FN},
};

std::string tf_dtype_name(int t) {
  if (tfpb::DataType_IsValid(t)) return tfpb::DataType_Name(tfpb::DataType(t));
  return str("DataType ", t);
}

TfBundleEntry parse_entry(const SSTableEntry& e, int32_t num_shards, const std::string& L) {
  auto where = [&] { return str("[tf-checkpoint] '", L, "': tensor '", e.key, "'"); };
  tfpb::BundleEntryProto p;
  TB_CHECK(p.ParseFromString(e.value), FormatError, where(), ": its BundleEntryProto does not parse");
  TB_CHECK(p.slices_size() == 0, UnsupportedError, where(), " is stored as ", p.slices_size(),
           " slices of a partitioned variable; sliced tensors are not supported (restore and save it unpartitioned)");
  TfBundleEntry out;
  out.key = e.key;
  if (p.dtype() == tfpb::DT_STRING) {
    out.is_string = true;
  } else {
    const DTypePair* m = nullptr;
    for (const auto& d : kDTypes)
      if (d.tf == p.dtype()) m = &d;
    TB_CHECK(m != nullptr, UnsupportedError, where(), " has dtype ", tf_dtype_name(p.dtype()),
             ", which tensorbridge does not read (float16/32/64, bfloat16, float8, int8..64, uint8..64, bool, "
             "complex64/128, string)");
    out.dtype = m->ours;
  }
  TB_CHECK(!p.shape().unknown_rank(), FormatError, where(), " has a shape of unknown rank");
  TB_CHECK(p.shape().dim_size() <= 64, FormatError, where(), " has ", p.shape().dim_size(), " dimensions (at most 64)");
  for (const auto& d : p.shape().dim()) {
    TB_CHECK(d.size() >= 0, FormatError, where(), " has a negative dimension ", d.size());
    out.shape.push_back(d.size());
  }
  TB_CHECK(p.shard_id() >= 0 && p.shard_id() < num_shards, FormatError, where(), " is in shard ", p.shard_id(),
           " but the header says there are ", num_shards);
  TB_CHECK(p.offset() >= 0 && p.size() >= 0, FormatError, where(), " has a negative offset or size (", p.offset(), ", ",
           p.size(), ")");
  out.shard = p.shard_id();
  out.offset = uint64_t(p.offset());
  out.size = uint64_t(p.size());
  out.masked_crc = p.crc32c();
  int64_t numel;
  try {
    numel = checked_numel(out.shape);
  } catch (const ShapeError&) {
    throw FormatError(str(where(), ": shape ", shape_str(out.shape), " overflows"));
  }
  if (!out.is_string) {
    uint64_t need;
    try {
      need = checked_nbytes(numel, dtype_size(out.dtype), "its byte size");
    } catch (const ShapeError& x) {
      throw FormatError(str(where(), " (", dtype_name(out.dtype), " ", shape_str(out.shape), "): ", x.message()));
    }
    TB_CHECK(need == out.size, FormatError, where(), " (", dtype_name(out.dtype), " ", shape_str(out.shape), ") needs ",
             need, " bytes but its entry says ", out.size);
  } else {
    TB_CHECK(uint64_t(numel) <= out.size, FormatError, where(), " holds ", numel, " strings in ", out.size,
             " bytes (each needs at least a length byte)");
  }
  return out;
}

/** Decodes a string tensor's bytes: varint lengths, masked CRC-32C of them, then the strings. TensorFlow's
 *  checksums cover each length as a uint32 (not its varint), then the 4 checksum bytes, then the strings;
 *  the entry's checksum is checked against that. */
std::vector<std::string> decode_strings(const uint8_t* p, size_t n, int64_t count, uint32_t entry_crc,
                                        const std::string& where) {
  const uint8_t* end = p + n;
  std::vector<uint64_t> lens;
  const uint8_t* q = p;
  uint32_t crc = 0;
  for (int64_t i = 0; i < count; ++i) {
    uint64_t v = 0;
    int shift = 0;
    while (true) {
      TB_CHECK(q < end && shift <= 63, FormatError, where, ": string length ", i,
               " is malformed or runs past its bytes");
      uint8_t b = *q++;
      v |= uint64_t(b & 0x7f) << shift;
      shift += 7;
      if (!(b & 0x80)) break;
    }
    lens.push_back(v);
    const uint32_t v32 = uint32_t(v);
    crc = crc32c_extend(crc, &v32, 4);
  }
  if (count > 0 || end - q == 4) {  // an empty string tensor may still carry the (empty) lengths' checksum
    TB_CHECK(end - q >= 4, FormatError, where, ": the lengths' checksum is missing");
    uint32_t stored;
    std::memcpy(&stored, q, 4);
    TB_CHECK(stored == crc32c_mask(crc), FormatError, where, ": CRC-32C mismatch in the string lengths");
    crc = crc32c_extend(crc, q, 4);
    q += 4;
  }
  std::vector<std::string> out;
  for (uint64_t l : lens) {
    TB_CHECK(l <= uint64_t(end - q), FormatError, where, ": a string of ", l, " bytes runs past the tensor's ", n,
             " bytes");
    out.emplace_back(reinterpret_cast<const char*>(q), size_t(l));
    crc = crc32c_extend(crc, q, size_t(l));
    q += l;
  }
  TB_CHECK(q == end, FormatError, where, ": ", end - q, " bytes are left after the strings");
  TB_CHECK(crc32c_mask(crc) == entry_crc, FormatError, where, ": CRC-32C mismatch (the index says ", entry_crc,
           ", the data gives ", crc32c_mask(crc), "); the data file is corrupt or belongs to another index");
  return out;
}

/** Keys of the variables reachable from the root object without passing an "optimizer" edge (anywhere:
 *  Keras models track their optimizer) or the root's "save_counter", in visiting order (the model's
 *  order). Empty when the graph does not parse. */
std::vector<std::string> model_keys_from_graph(const std::string& bytes, std::set<std::string>& in_graph) {
  tfpb::TrackableObjectGraph g;
  if (!g.ParseFromString(bytes) || g.nodes_size() == 0) return {};
  for (const auto& n : g.nodes())
    for (const auto& a : n.attributes()) in_graph.insert(a.checkpoint_key());
  std::vector<std::string> keys;
  std::vector<bool> seen(size_t(g.nodes_size()), false);
  std::deque<int> todo{0};
  seen[0] = true;
  while (!todo.empty()) {
    int id = todo.front();
    todo.pop_front();
    const auto& node = g.nodes(id);
    for (const auto& a : node.attributes()) keys.push_back(a.checkpoint_key());
    for (const auto& c : node.children()) {
      if (c.local_name() == "optimizer" || (id == 0 && c.local_name() == "save_counter")) continue;
      if (c.node_id() < 0 || c.node_id() >= g.nodes_size() || seen[size_t(c.node_id())]) continue;
      seen[size_t(c.node_id())] = true;
      todo.push_back(c.node_id());
    }
  }
  return keys;
}

/** A key TensorFlow gives a variable: "<escaped object path>/.ATTRIBUTES/VARIABLE_VALUE". */
bool is_tf_variable_key(const std::string& key) {
  const std::string suffix = kValueSuffix;
  return key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0 &&
         key.find("/.OPTIMIZER_SLOT/") == std::string::npos;
}

/** Optimizer state or a counter by its key alone (bundles without an object graph): TF 2's
 *  optimizer/, save_counter/ and .OPTIMIZER_SLOT/ keys, and TF 1 Saver names (the slots "<var>/Adam",
 *  "<var>/Adam_1", "<var>/Momentum", ... of tf.compat.v1.train optimizers, Adam's beta1_power and
 *  beta2_power, global_step). */
bool is_training_state_key(const std::string& key) {
  if (key.rfind("optimizer/", 0) == 0 || key.rfind("save_counter/", 0) == 0 ||
      key.find("/.OPTIMIZER_SLOT/") != std::string::npos)
    return true;
  if (key == "beta1_power" || key == "beta2_power" || key == "global_step") return true;
  const size_t slash = key.rfind('/');
  if (slash == std::string::npos) return false;
  const std::string last = key.substr(slash + 1);
  for (const char* slot :
       {"Adam", "Adam_1", "Momentum", "RMSProp", "RMSProp_1", "Adagrad", "Adadelta", "Adadelta_1", "Ftrl", "Ftrl_1"})
    if (last == slot) return true;
  return false;
}

std::string readable_name(const std::string& key) {
  const std::string suffix = kValueSuffix;
  if (key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0)
    return key.substr(0, key.size() - suffix.size());
  return key;
}

/** Readable names all under one first component ("model/..." of tf.train.Checkpoint(model=...)) lose it
 *  when every tensor keeps at least two components, so Keras layer paths start at the layer. */
void strip_common_component(Checkpoint& c) {
  std::string first;
  size_t tensors = 0;
  for (const auto& [k, v] : c.root.dict_data().items) {
    if (!v.is_tensor()) continue;
    const std::string& name = k.as_str();
    size_t slash = name.find('/');
    if (slash == std::string::npos || name.find('/', slash + 1) == std::string::npos) return;
    if (tensors++ == 0) first = name.substr(0, slash + 1);
    if (name.compare(0, first.size(), first) != 0) return;
  }
  if (tensors == 0) return;
  Value root = Value::dict();
  for (const auto& [k, v] : c.root.dict_data().items)
    root.set_item(v.is_tensor() ? Value::string(k.as_str().substr(first.size())) : k, v);
  c.root = std::move(root);
  c.info.emplace_back("common prefix removed", first);
}

/** A scalar string tensor's bytes in a data shard: varint length, masked CRC-32C of the length (as a
 *  uint32), the string. */
std::string encode_string_scalar(const std::string& v) {
  std::string out;
  uint64_t n = v.size();
  while (n >= 0x80) {
    out += char(uint8_t(n) | 0x80);
    n >>= 7;
  }
  out += char(uint8_t(n));
  const uint32_t len32 = uint32_t(v.size());
  const uint32_t masked = crc32c_mask(crc32c_extend(0, &len32, 4));
  out.append(reinterpret_cast<const char*>(&masked), 4);
  return out + v;
}

/** The entry checksum of that tensor: over the length as uint32, the 4 checksum bytes, the string. */
uint32_t string_scalar_crc(const std::string& v) {
  const uint32_t len32 = uint32_t(v.size());
  uint32_t crc = crc32c_extend(0, &len32, 4);
  const uint32_t masked = crc32c_mask(crc);
  crc = crc32c_extend(crc, &masked, 4);
  return crc32c_mask(crc32c_extend(crc, v.data(), v.size()));
}

std::string shard_name(const std::string& prefix, int32_t shard, int32_t num) {
  char buf[48];
  std::snprintf(buf, sizeof buf, ".data-%05d-of-%05d", int(shard), int(num));
  return prefix + buf;
}

}  // namespace

TfBundleIndex parse_tf_bundle_index(const Reader& index, LoadBudget& budget) {
  const std::string& L = index.label();
  std::vector<SSTableEntry> table = read_sstable(index, budget);
  TB_CHECK(!table.empty() && table[0].key.empty(), FormatError, "[tf-checkpoint] '", L,
           "' has no header entry (the empty key); not a tensor bundle index");
  tfpb::BundleHeaderProto h;
  TB_CHECK(h.ParseFromString(table[0].value), FormatError, "[tf-checkpoint] '", L,
           "': the header (BundleHeaderProto) does not parse");
  TB_CHECK(h.num_shards() >= 1 && h.num_shards() <= 100000, FormatError, "[tf-checkpoint] '", L, "': the header says ",
           h.num_shards(), " data shards (expected 1 to 100000)");
  TB_CHECK(h.endianness() == tfpb::BundleHeaderProto::LITTLE, UnsupportedError, "[tf-checkpoint] '", L,
           "' is a big-endian bundle; only little-endian bundles are read");
  TB_CHECK(h.version().min_consumer() <= 1, UnsupportedError, "[tf-checkpoint] '", L,
           "' needs a bundle reader of version ", h.version().min_consumer(), " or later (this one reads version 1)");
  for (int bad : h.version().bad_consumers())
    TB_CHECK(bad != 1, UnsupportedError, "[tf-checkpoint] '", L, "' says bundle readers of version 1 must not read it");
  TfBundleIndex out;
  out.num_shards = h.num_shards();
  out.producer = h.version().producer();
  out.entries.reserve(table.size() - 1);
  for (size_t i = 1; i < table.size(); ++i) out.entries.push_back(parse_entry(table[i], out.num_shards, L));
  return out;
}

Checkpoint load_tf_checkpoint(const Source& src, const LoadOptions& opts) {
  const TfBundleLocation loc = find_tf_bundle(src);
  if (!loc.ambiguous.empty()) {
    std::string names;
    for (const auto& n : loc.ambiguous) names += (names.empty() ? "" : ", ") + n;
    throw FormatError(str("[tf-checkpoint] folder '", src.label(), "' holds several bundles (", names,
                          ") and no `checkpoint` file naming one; pass the one to read (its .index or prefix)"));
  }
  TB_CHECK(!loc.index.empty(), FormatError, "[tf-checkpoint] '", src.label(),
           "' is not a TensorFlow checkpoint (x.index, its prefix x, or a folder with a `checkpoint` file, one *.index "
           "or variables/variables.index)");
  const ConfinedFolder folder(loc.folder, "the checkpoint folder");
  const std::string context = str("[tf-checkpoint] '", src.label(), "':");
  std::shared_ptr<Reader> index;
  if (loc.index_is_named)
    index = src.reader ? src.reader : open_file(loc.folder / loc.index, opts.mmap);
  else
    index = folder.open_file(loc.index, str(context, " index"), opts.mmap);
  const std::string& L = index->label();
  LoadBudget budget(opts.limits, L, index->size());
  TfBundleIndex idx = parse_tf_bundle_index(*index, budget);
  TB_CHECK(host_little_endian(), UnsupportedError, "[tf-checkpoint] reading on a big-endian host is not supported");

  const std::string prefix = loc.index.substr(0, loc.index.size() - std::string(".index").size());
  std::vector<std::shared_ptr<Reader>> shards(size_t(idx.num_shards));
  auto shard = [&](int32_t i) -> const Reader& {
    auto& r = shards[size_t(i)];
    if (!r) {
      r = folder.open_file(shard_name(prefix, i, idx.num_shards), str("[tf-checkpoint] '", L, "': data shard"),
                           opts.mmap);
      budget.add_input(r->size());
    }
    return *r;
  };

  std::vector<std::pair<std::string, Value>> values;  // in key order
  std::string object_graph;
  for (const TfBundleEntry& e : idx.entries) {
    const Reader& r = shard(e.shard);
    const std::string where = str("[tf-checkpoint] '", r.label(), "': tensor '", e.key, "'");
    TB_CHECK(e.offset <= r.size() && e.size <= r.size() - e.offset, FormatError, where, " (bytes ", e.offset, "..",
             e.offset + e.size, ") runs past the data shard's end at ", r.size(), "; truncated?");
    std::shared_ptr<Storage> st;
    if (opts.mmap && !e.is_string) {
      st = r.map(e.offset, size_t(e.size));
      size_t align = std::min<size_t>(dtype_size(e.dtype), 8);
      if (st && e.size > 0 && reinterpret_cast<uintptr_t>(st->data()) % align != 0) st = nullptr;
    }
    if (!st) {
      budget.charge_bytes(e.size, where);
      st = Storage::allocate(size_t(e.size), false);
      if (e.size) r.read_at(e.offset, st->data(), size_t(e.size));
    }
    uint32_t crc = e.is_string ? e.masked_crc : crc32c_mask(crc32c_extend(0, st->data(), size_t(e.size)));
    TB_CHECK(crc == e.masked_crc, FormatError, where, ": CRC-32C mismatch (the index says ", e.masked_crc,
             ", the data gives ", crc, "); the data file is corrupt or belongs to another index");
    if (e.is_string) {
      int64_t n = checked_numel(e.shape);
      budget.charge_objects(uint64_t(n), where);
      budget.charge_bytes(e.size, where);  // the decoded strings
      auto strings = decode_strings(st->data(), size_t(e.size), n, e.masked_crc, where);
      if (e.key == kObjectGraphKey && e.shape.empty()) object_graph = strings[0];
      if (e.shape.empty()) {
        values.emplace_back(e.key, Value::bytes(std::move(strings[0])));
      } else {
        ValueList items;
        for (auto& s : strings) items.push_back(Value::bytes(std::move(s)));
        values.emplace_back(e.key, Value::list(std::move(items)));
      }
      continue;
    }
    values.emplace_back(e.key, Value::tensor(Tensor(std::move(st), e.dtype, e.shape, contiguous_strides(e.shape), 0)));
  }

  Checkpoint c;
  c.format = "tf-checkpoint";
  c.root = Value::dict();
  c.info.emplace_back("index", L);
  c.info.emplace_back("data shards", std::to_string(idx.num_shards));
  c.info.emplace_back("bundle producer version", std::to_string(idx.producer));
  if (!opts.readable_names) {
    for (auto& [k, v] : values) c.root.set_item(Value::string(naming::decode_name(k, naming::Target::Onnx)), v);
    return c;
  }
  // Readable names: the model's variables first (object-graph order), then everything else as
  // non-tensor values, so nothing disappears from `inspect`.
  std::set<std::string> in_graph;
  std::vector<std::string> model =
      object_graph.empty() ? std::vector<std::string>{} : model_keys_from_graph(object_graph, in_graph);
  std::unordered_map<std::string, size_t> pos;
  for (size_t i = 0; i < values.size(); ++i) pos.emplace(values[i].first, i);
  std::vector<bool> used(values.size(), false);
  size_t kept = 0, state = 0;
  auto take = [&](size_t i) {
    used[i] = true;
    const auto& [k, v] = values[i];
    if (v.is_tensor()) ++kept;
    c.root.set_item(Value::string(naming::decode_name(v.is_tensor() ? readable_name(k) : k, naming::Target::Onnx)), v);
  };
  for (const auto& k : model)
    if (auto it = pos.find(k); it != pos.end() && !used[it->second]) take(it->second);
  for (size_t i = 0; i < values.size(); ++i) {
    if (used[i]) continue;
    const auto& [k, v] = values[i];
    const bool training = in_graph.count(k) ? true : is_training_state_key(k);
    if (!v.is_tensor() || !training) {
      take(i);
      continue;
    }
    used[i] = true;
    ++state;
    c.root.set_item(Value::string(k), Value::object(str("tf optimizer state ", v.as_tensor().describe()), v));
  }
  strip_common_component(c);
  c.info.emplace_back("readable names",
                      str(kept, " model tensors; ", state, " optimizer/counter tensors kept as non-tensor values"));
  return c;
}

void write_tf_checkpoint(const Checkpoint& ckpt, const fs::path& path, const TfCheckpointWriteOptions& opts) {
  TB_CHECK(host_little_endian(), UnsupportedError, "[tf-checkpoint] writing on a big-endian host is not supported");
  const StateDict sd = ckpt.named_tensors();
  std::string prefix = path.string();
  if (path.extension() == ".index") prefix.resize(prefix.size() - 6);
  TB_CHECK(!fs::path(prefix).filename().empty(), UnsupportedError, "[tf-checkpoint] '", path.string(),
           "' names no checkpoint prefix");
  const std::string &keys = opts.keys, &root = opts.root;
  TB_CHECK(root.find('/') == std::string::npos, UnsupportedError, "[tf-checkpoint] --option root=", root,
           " must be one object name (no '/')");
  // Keys follow the naming rule (formats/naming.h): only '%' and the empty name (the header's key) change;
  // keys=tf stores each variable under the key TensorFlow gives its object path instead.
  const std::vector<std::string> stored = naming::stored_names(sd, naming::Target::Onnx);
  std::vector<TfGraphVariable> graph_vars;
  std::vector<std::pair<std::string, const Tensor*>> items;
  for (size_t i = 0; i < sd.size(); ++i) {
    const std::string& name = sd.entries()[i].first;
    std::string key = stored[i];
    if (keys == "tf") {  // the path, root included, goes into the key; the graph reads it back from there
      std::vector<std::string> obj = tf_object_path(name);
      if (!obj.empty()) {
        if (!root.empty()) obj.insert(obj.begin(), root);
        key = tf_key_for_path(obj);
      }
    }
    TB_CHECK(key != kObjectGraphKey, UnsupportedError, "[tf-checkpoint] tensor '", name, "': the key ", kObjectGraphKey,
             " is the bundle's object graph");
    // TensorFlow restores by object only keys of the form ".../.ATTRIBUTES/<attribute>".
    if (is_tf_variable_key(key)) graph_vars.push_back({key, key});
    items.emplace_back(key, &sd.entries()[i].second);
  }
  std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 1; i < items.size(); ++i)
    TB_CHECK(items[i].first != items[i - 1].first, UnsupportedError,
             "[tf-checkpoint] two tensors would be stored under the key '", items[i].first, "'");
  const std::string graph = build_tf_object_graph(graph_vars, keys == "tf" ? std::string() : root);
  const std::string graph_bytes = encode_string_scalar(graph);
  // The graph's entry goes where its key sorts (after items[graph_pos - 1]); none when no tensor is in it.
  size_t graph_pos = items.size() + 1;
  if (!graph_vars.empty()) {
    auto at = std::lower_bound(items.begin(), items.end(), std::string(kObjectGraphKey),
                               [](const auto& a, const std::string& k) { return a.first < k; });
    graph_pos = size_t(at - items.begin());
  }

  const fs::path data_path = shard_name(prefix, 0, 1), index_path = prefix + ".index";
  AtomicFileWriter data(data_path, opts.overwrite);
  AtomicFileWriter index_w(index_path, opts.overwrite);
  std::vector<SSTableEntry> table;
  tfpb::BundleHeaderProto h;
  h.set_num_shards(1);
  h.set_endianness(tfpb::BundleHeaderProto::LITTLE);
  h.mutable_version()->set_producer(1);
  table.push_back({"", h.SerializeAsString()});
  auto write_graph = [&] {
    tfpb::BundleEntryProto e;
    e.set_dtype(tfpb::DT_STRING);
    e.mutable_shape();
    e.set_shard_id(0);
    e.set_offset(int64_t(data.tell()));
    e.set_size(int64_t(graph_bytes.size()));
    e.set_crc32c(string_scalar_crc(graph));
    data.write(graph_bytes.data(), graph_bytes.size());
    table.push_back({kObjectGraphKey, e.SerializeAsString()});
  };
  for (size_t i = 0; i < items.size(); ++i) {
    if (i == graph_pos) write_graph();
    const auto& [name, t] = items[i];
    const DTypePair* m = nullptr;
    for (const auto& d : kDTypes)
      if (d.ours == t->dtype()) m = &d;
    TB_CHECK(m != nullptr, UnsupportedError, "[tf-checkpoint] tensor '", name, "' has dtype ", dtype_name(t->dtype()),
             ", which a bundle cannot store");
    Tensor c = t->is_contiguous() ? *t : t->contiguous();
    tfpb::BundleEntryProto e;
    e.set_dtype(m->tf);
    for (int64_t d : c.shape()) e.mutable_shape()->add_dim()->set_size(d);
    e.set_shard_id(0);
    e.set_offset(int64_t(data.tell()));
    e.set_size(int64_t(c.nbytes()));
    e.set_crc32c(crc32c_mask(crc32c_extend(0, c.nbytes() ? c.data() : nullptr, c.nbytes())));
    data.write_tensor(c);
    table.push_back({name, e.SerializeAsString()});
  }
  if (graph_pos == items.size()) write_graph();
  index_w.write(write_sstable(table));
  // The .index is the commit point: an old one goes first, so it never describes the new data.
  std::error_code ec;
  if (opts.overwrite && fs::is_regular_file(fs::symlink_status(index_path, ec))) fs::remove(index_path, ec);
  data.commit();
  index_w.commit();
}

void save_tf_checkpoint(const Checkpoint& ckpt, const fs::path& path, const SaveOptions& opts) {
  tf_checkpoint_format().save(ckpt, path, opts);
}

const FormatAdapter& tf_checkpoint_format() {
  static const FormatAdapter a = with_writer<TfCheckpointWriteOptions>(
      {.name = "tf-checkpoint",
       .description = "TensorFlow checkpoint bundle (.index + .data-*; tf.train.Checkpoint, tf-keras save_weights, "
                      "SavedModel variables/)",
       .extensions = {".index"},
       .sniff =
           [](const Source& s) {
             TfBundleLocation loc = find_tf_bundle(s);
             return !loc.index.empty() || !loc.ambiguous.empty();
           },
       .load = load_tf_checkpoint},
      {choice_option<TfCheckpointWriteOptions>(
           "keys", &TfCheckpointWriteOptions::keys, {"given", "tf"},
           "given (each tensor under its name, default) or tf (under the key TensorFlow gives its object path)"),
       text_option<TfCheckpointWriteOptions>("root", &TfCheckpointWriteOptions::root,
                                             "an object between the graph's root and every variable (model for "
                                             "tf.train.Checkpoint(model=m)); default none")},
      write_tf_checkpoint);
  return a;
}

}  // namespace tb
