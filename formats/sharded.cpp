// Sharded checkpoints: index.json + shards; layout in sharded.h.
#include "formats/sharded.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "formats/detail/open_beneath.h"
#include "formats/registry.h"
#include "formats/safetensors.h"
#include "tensor/atomic_output.h"
#include "tensor/byte_size.h"

namespace tb {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

uint64_t parse_shard_size(const std::string& text) { return parse_byte_size(text, "shard size"); }

namespace {
/** The same view of the same storage (what the safetensors writer stores once). */
bool same_view(const Tensor& a, const Tensor& b) {
  return a.shares_storage(b) && a.byte_offset() == b.byte_offset() && a.dtype() == b.dtype() &&
         a.shape() == b.shape() && a.strides() == b.strides();
}

/** Bytes of tensor data once tied tensors are counted once. */
uint64_t unique_bytes(const std::vector<const Tensor*>& ts) {
  uint64_t sum = 0;
  std::map<std::pair<const void*, int64_t>, std::vector<const Tensor*>> buckets;
  for (const Tensor* t : ts) {
    auto& b = buckets[{t->storage().get(), t->byte_offset()}];
    bool dup = std::any_of(b.begin(), b.end(), [&](const Tensor* o) { return same_view(*o, *t); });
    if (!dup) {
      sum += t->nbytes();
      b.push_back(t);
    }
  }
  return sum;
}

/** "<stem>-00002-of-00004.safetensors", with a generation token "<stem>-tb1a2b3c4d-00002-of-00004.safetensors". */
std::string shard_file_name(const std::string& stem, const std::string& token, size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "-%05zu-of-%05zu.safetensors", i + 1, n);
  return stem + (token.empty() ? "" : "-" + token) + buf;
}

}  // namespace

bool is_shard_name(const std::string& name, const std::string& stem) {
  static const std::regex tail(R"(-(tb[0-9a-f]{8}-)?[0-9]{5,}-of-[0-9]{5,}\.safetensors)");
  return name.size() > stem.size() && name.compare(0, stem.size(), stem) == 0 &&
         std::regex_match(name.begin() + std::ptrdiff_t(stem.size()), name.end(), tail);
}

fs::path find_shard_index(const Source& src) {
  try {
    std::error_code ec;
    if (src.reader) {
      if (!src.path.filename().string().ends_with(".index.json")) return {};
      size_t n = size_t(std::min<uint64_t>(src.reader->size(), 1 << 16));
      return src.reader->read_string(0, n).find("\"weight_map\"") != std::string::npos ? src.path : fs::path();
    }
    if (!fs::is_directory(src.path, ec)) return {};
    for (const char* name : {"model.safetensors.index.json", "pytorch_model.bin.index.json"})
      if (fs::is_regular_file(src.path / name, ec)) return src.path / name;
    fs::path found;
    for (const auto& e : fs::directory_iterator(src.path, ec)) {
      if (!e.path().filename().string().ends_with(".index.json")) continue;
      if (!found.empty()) return {};  // ambiguous
      found = e.path();
    }
    return found;
  } catch (...) {
    return {};
  }
}

namespace {
/** One shard, opened inside the checkpoint folder; a shard that is itself an index is refused (an
 *  index naming itself, or two naming each other, would otherwise recurse without end). */
Checkpoint load_shard(const ConfinedFolder& folder, const std::string& shard, const std::string& L,
                      const LoadOptions& opts) {
  Source s;
  s.path = folder.path() / shard;
  s.reader = folder.open_file(shard, str("[sharded] '", L, "': shard"), opts.mmap);
  s.path_label = s.reader->label();
  TB_CHECK(find_shard_index(s).empty(), FormatError, "[sharded] '", L, "': shard '", shard,
           "' is itself a sharded index; an index names shard files only, never another index");
  if (shard.ends_with(".safetensors")) return load_safetensors(s.reader, opts);
  const FormatAdapter& f = detect_format(s);
  Checkpoint c = f.load(s, opts);
  c.format = f.name;
  return c;
}

/** The parsed index read by `index`: its JSON and weight_map as (tensor, shard) pairs in file order. */
struct ParsedIndex {
  ojson json;
  std::vector<std::pair<std::string, std::string>> names;  // tensor -> shard
  std::vector<std::string> shard_order;                    // first appearance in weight_map
};

ParsedIndex parse_index(const Reader& index) {
  const std::string& L = index.label();
  TB_CHECK(index.size() <= (64u << 20), FormatError, "[sharded] '", L, "' is ", index.size(),
           " bytes; expected at most ", 64u << 20);
  std::string text = index.read_string(0, size_t(index.size()));
  ParsedIndex p;
  ojson& j = p.json;
  try {
    j = ojson::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(str("[sharded] '", L, "' is not valid JSON (", e.what(), ")"));
  }
  TB_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), FormatError, "[sharded] '", L,
           "' has no \"weight_map\" object mapping tensor names to shard files");
  // Shard paths are checked when each is opened inside the folder (relative, no '..', no links).
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    TB_CHECK(it.value().is_string(), FormatError, "[sharded] '", L, "': weight_map entry '", it.key(),
             "' must be a shard file name but is ", it.value().dump());
    std::string shard = it.value().get<std::string>();
    if (std::find(p.shard_order.begin(), p.shard_order.end(), shard) == p.shard_order.end())
      p.shard_order.push_back(shard);
    p.names.emplace_back(it.key(), shard);
  }
  return p;
}

/** Loads the index read by `index` and every shard it names, each opened inside folder. */
Checkpoint load_index(const ConfinedFolder& folder, const Reader& index, const LoadOptions& opts) {
  const std::string& L = index.label();
  ParsedIndex parsed = parse_index(index);
  const ojson& j = parsed.json;
  const auto& names = parsed.names;
  const auto& shard_order = parsed.shard_order;

  std::map<std::string, StateDict> shards;
  Checkpoint c;
  c.format = "safetensors";
  bool all_st = true;
  for (const auto& shard : shard_order) {
    Checkpoint sc;
    try {
      all_st = all_st && shard.ends_with(".safetensors");
      sc = load_shard(folder, shard, L, opts);
    } catch (Error& e) {
      e.add_context(str("while loading shard '", shard, "' of '", L, "'"));
      throw;
    }
    if (c.metadata.empty()) c.metadata = sc.metadata;
    if (!all_st) c.format = sc.format;  // torch shards: report the shards' format
    shards.emplace(shard, sc.state_dict());
  }

  c.root = Value::dict();
  uint64_t sum_all = 0;
  std::vector<const Tensor*> indexed;
  std::set<const void*> storages;
  uint64_t sum_storages = 0;
  for (const auto& [name, shard] : names) {
    const Tensor* t = shards.at(shard).find(name);
    TB_CHECK(t != nullptr, KeyError, "[sharded] '", L, "': weight_map puts '", name, "' in '", shard,
             "' but that shard has no such tensor");
    c.root.set_item(Value::string(name), Value::tensor(*t));
    sum_all += t->nbytes();
    indexed.push_back(t);
    if (storages.insert(t->storage().get()).second) sum_storages += t->storage()->nbytes();
  }
  const uint64_t sum_unique = unique_bytes(indexed);
  if (j.contains("metadata") && j["metadata"].is_object()) {
    const auto& m = j["metadata"];
    if (m.contains("total_size")) {
      TB_CHECK(m["total_size"].is_number(), FormatError, "[sharded] '", L, "': metadata.total_size must be a number");
      uint64_t total = m["total_size"].is_number_unsigned() ? m["total_size"].get<uint64_t>()
                                                            : uint64_t(m["total_size"].get<double>());
      TB_CHECK(total == sum_all || total == sum_unique || total == sum_storages, FormatError, "[sharded] '", L,
               "': metadata.total_size is ", total, " but the indexed tensors hold ", sum_unique,
               " bytes; a shard was replaced or the index is stale");
    }
    for (auto it = m.begin(); it != m.end(); ++it)
      if (it.key() != "total_size") c.info.emplace_back("index " + it.key(), it.value().dump());
  }
  c.info.emplace_back("shards", std::to_string(shard_order.size()));
  c.info.emplace_back("index", fs::path(L).filename().string());
  return c;
}
}  // namespace

Checkpoint load_sharded(const fs::path& index, const LoadOptions& opts) {
  // The index the user named may be a link; the shards it names are opened inside its folder.
  const fs::path folder = index.parent_path().empty() ? fs::path(".") : index.parent_path();
  return load_index(ConfinedFolder(folder, "the checkpoint folder"), *open_file(index, false), opts);
}

Checkpoint load_sharded_folder(const fs::path& folder, const std::string& index_name, const LoadOptions& opts) {
  const ConfinedFolder f(folder, "the checkpoint folder");
  auto index = f.open_file(index_name, str("[sharded] folder '", folder.string(), "': index"), false);
  return load_index(f, *index, opts);
}

ShardList list_shards(const Source& src) {
  const fs::path index = find_shard_index(src);
  TB_CHECK(!index.empty(), UnsupportedError, "'", src.label(),
           "' is not a sharded checkpoint (an *.index.json naming shard files, or a folder holding one)");
  ShardList list;
  std::shared_ptr<Reader> reader;
  if (src.reader) {  // the index the user named (it may be a link); its shards are opened inside its folder
    list.folder_path = folder_of(index);
    list.folder = std::make_shared<const ConfinedFolder>(list.folder_path, "the checkpoint folder");
    reader = open_file(index, false);
  } else {
    list.folder_path = src.path;
    list.folder = std::make_shared<const ConfinedFolder>(src.path, "the checkpoint folder");
    reader = list.folder->open_file(index.filename().string(), str("[sharded] folder '", src.path.string(), "': index"),
                                    false);
  }
  list.label = reader->label();
  ParsedIndex parsed = parse_index(*reader);
  list.shards = parsed.shard_order;
  std::sort(list.shards.begin(), list.shards.end());  // model-00001-of-00003 ... in number order
  list.names.resize(list.shards.size());
  for (const auto& [name, shard] : parsed.names) {
    size_t k = size_t(std::lower_bound(list.shards.begin(), list.shards.end(), shard) - list.shards.begin());
    list.names[k].insert(name);
  }
  return list;
}

Checkpoint load_listed_shard(const ShardList& list, size_t k, const LoadOptions& opts) {
  TB_CHECK(k < list.shards.size(), KeyError, "[sharded] '", list.label, "' has ", list.shards.size(),
           " shards; there is no shard ", k);
  const std::string& shard = list.shards[k];
  Checkpoint sc;
  try {
    sc = load_shard(*list.folder, shard, list.label, opts);
  } catch (Error& e) {
    e.add_context(str("while loading shard '", shard, "' of '", list.label, "'"));
    throw;
  }
  // The shard's tensors that the index puts there, in the shard's own order.
  std::vector<NonTensor> skipped;
  StateDict all = sc.state_dict({}, &skipped);
  StateDict mine;
  mine.metadata = sc.metadata;
  for (const auto& [name, t] : all)
    if (list.names[k].count(name)) mine.insert(name, t);
  for (const auto& name : list.names[k])
    TB_CHECK(mine.contains(name), KeyError, "[sharded] '", list.label, "': weight_map puts '", name, "' in '", shard,
             "' but that shard has no such tensor");
  Checkpoint c = Checkpoint::from_state_dict(mine, sc.format);
  c.info = sc.info;
  return c;
}

ShardTarget shard_target(const fs::path& path) {
  std::error_code ec;
  ShardTarget t;
  t.folder = path;
  std::string prefix = "model";
  // "shards/" (a trailing separator) or "shards" (no extension) names a folder of reference-named
  // shards (model-00001-of-00004.safetensors), created when missing; "x.safetensors" names a prefix.
  const std::string text = path.string();
  const bool names_folder = !text.empty() && (text.back() == '/' || !path.has_extension());
  if (names_folder && !fs::exists(fs::symlink_status(path, ec))) {
    TB_CHECK(fs::create_directory(path, ec) || fs::is_directory(path), IoError, "cannot create the shard folder '",
             text, "': ", ec.message());
  }
  if (!fs::is_directory(path, ec)) {
    t.folder = folder_of(path);
    prefix = path.stem().string();
  }
  t.single = fs::is_directory(path, ec) ? path / "model.safetensors" : path;
  t.stem = fit_name_stem(prefix, 40);
  return t;
}

std::string shard_file_name(const std::string& stem, size_t i, size_t n) { return shard_file_name(stem, "", i, n); }

std::string shard_index_json(const std::vector<std::pair<std::string, const StateDict*>>& shards) {
  nlohmann::json index;  // std::map keys: sorted like json.dumps(sort_keys=True)
  uint64_t total = 0;
  for (const auto& [file, sd] : shards) {
    std::vector<const Tensor*> ts;
    for (const auto& [name, t] : *sd) {
      TB_CHECK(!index["weight_map"].contains(name), KeyError, "two shards hold a tensor named '", name, "' (in '",
               index["weight_map"][name].get<std::string>(), "' and '", file, "')");
      index["weight_map"][name] = file;
      ts.push_back(&t);
    }
    total += unique_bytes(ts);
  }
  index["metadata"]["total_size"] = total;
  if (!index.contains("weight_map")) index["weight_map"] = nlohmann::json::object();
  return index.dump(2, ' ', true) + "\n";
}

std::vector<fs::path> save_sharded_safetensors(const StateDict& sd, const Metadata& metadata, const fs::path& path,
                                               uint64_t max_shard_bytes, bool overwrite) {
  TB_CHECK(max_shard_bytes > 0, UnsupportedError, "shard size must be positive");
  std::error_code ec;
  const ShardTarget where = shard_target(path);
  const fs::path& folder = where.folder;
  // Split: state-dict order, tensors of one storage together (huggingface_hub's rule).
  std::vector<StateDict> shards(1);
  std::vector<uint64_t> shard_bytes(1, 0);
  std::map<const void*, size_t> storage_shard;
  std::vector<std::pair<std::string, size_t>> later;  // shared-storage tensors, placed after the split
  for (const auto& [name, t] : sd) {
    const void* sid = t.storage().get();
    if (auto s = storage_shard.find(sid); s != storage_shard.end()) {
      later.emplace_back(name, s->second);
      continue;
    }
    uint64_t size = t.nbytes();
    size_t target;
    if (size > max_shard_bytes) {
      if (!shards.back().empty()) {
        shards.emplace_back();
        shard_bytes.push_back(0);
      }
      target = shards.size() - 1;
      shards.back().insert(name, t);
      shard_bytes.back() += size;
      shards.emplace_back();
      shard_bytes.push_back(0);
    } else {
      if (shard_bytes.back() + size > max_shard_bytes && !shards.back().empty()) {
        shards.emplace_back();
        shard_bytes.push_back(0);
      }
      target = shards.size() - 1;
      shards.back().insert(name, t);
      shard_bytes.back() += size;
    }
    storage_shard.emplace(sid, target);
  }
  for (const auto& [name, idx] : later) shards[idx].insert(name, sd.at(name));
  while (shards.size() > 1 && shards.back().empty()) shards.pop_back();

  // The output: one file (`single`), or an index naming shard files; either replaces the other.
  const fs::path& single = where.single;
  const std::string& stem = where.stem;
  const std::string index_name = stem + ".safetensors.index.json";
  DirHandle dir(folder, single);
  struct stat st {};
  if (shards.size() == 1) {
    TB_CHECK(overwrite || !stat_entry(dir, index_name, st), IoError, "'", dir.display(index_name),
             "' already exists; pass --force to overwrite it");
    AtomicFileWriter w(single, overwrite);
    write_safetensors(w, shards[0], metadata);
    FolderLock lock(dir);  // commit and clean-up as one step against other writers of this output
    w.commit();
    // The new file is in place; then the previous sharded set goes (the index first: readers prefer it).
    if (overwrite && stat_entry(dir, index_name, st) && S_ISREG(st.st_mode))
      ::unlinkat(dir.fd(), index_name.c_str(), 0);
    remove_unlocked_files(dir, [&](const std::string& n) { return is_shard_name(n, stem); });
    dir.sync();
    return {single};
  }
  const std::string single_name = single.filename().string();
  TB_CHECK(overwrite || !stat_entry(dir, single_name, st), IoError, "'", dir.display(single_name),
           "' already exists; pass --force to overwrite it");
  AtomicFileWriter index_w(folder / index_name, overwrite);  // refuses an existing index before any shard is written
  // Shards get new names: the reference ones when free, else with a generation token, so that the
  // previous set stays complete until the index is renamed into place (the commit point).
  const size_t n = shards.size();
  std::string token;
  for (size_t i = 0; i < n && token.empty(); ++i)
    if (stat_entry(dir, shard_file_name(stem, "", i, n), st)) token = generation_token();
  std::vector<std::unique_ptr<NewFileWriter>> writers;
  auto write_shards = [&] {  // false when a name was taken meanwhile (another writer)
    for (size_t i = 0; i < n; ++i) {
      writers.push_back(std::make_unique<NewFileWriter>(dir, shard_file_name(stem, token, i, n)));
      if (!writers.back()->created()) return false;
      write_safetensors(*writers.back(), shards[i], metadata);
      writers.back()->finish();
    }
    return true;
  };
  while (!write_shards()) {
    TB_CHECK(token.empty(), IoError, "cannot create '", dir.display(writers.back()->name()), "': it already exists");
    writers.clear();  // removes the shards written so far; again under a generation token
    token = generation_token();
  }
  std::vector<std::pair<std::string, const StateDict*>> listed;
  std::set<std::string> names;
  for (size_t i = 0; i < n; ++i) {
    listed.emplace_back(writers[i]->name(), &shards[i]);
    names.insert(writers[i]->name());
  }
  index_w.write(shard_index_json(listed));
  std::vector<fs::path> written;
  {
    FolderLock lock(dir);
    {
      SignalBlock block;  // the committed index and its shards leave the signal handler's list together
      index_w.commit();
      for (auto& w : writers) {
        w->keep();
        written.push_back(folder / w->name());
      }
    }
    // The previous output: a single file (after the index, which readers prefer), old or orphaned shards.
    if (overwrite && stat_entry(dir, single_name, st) && S_ISREG(st.st_mode))
      ::unlinkat(dir.fd(), single_name.c_str(), 0);
    remove_unlocked_files(dir, [&](const std::string& f) { return is_shard_name(f, stem) && !names.count(f); });
    dir.sync();
  }
  written.push_back(index_w.target());
  return written;
}

}  // namespace tb
