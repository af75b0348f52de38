#include "cli/commands.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "cli/nn_commands.h"
#include "formats/registry.h"
#include "models/compare.h"
#include "nn/select.h"
#include "nn/style.h"

namespace tb::cli {

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  std::ostringstream os;
  if (u == 0)
    os << n << " B";
  else
    os << std::fixed << std::setprecision(1) << v << " " << units[u];
  return os.str();
}

const char* const kReadableNamesHelp =
    "tf-checkpoint: model variables by object path (layer_with_weights-0/kernel); optimizer slots and counters "
    "kept as non-tensor values";

LoadOptions LoadFlags::options(bool readable_names_implied) const {
  LoadOptions o;
  o.allow_unknown_globals = allow_unknown_globals;
  o.keep_quantized = keep_quantized;
  o.readable_names = readable_names || readable_names_implied;
  return o;
}

void add_load_flags(CLI::App* cmd, LoadFlags& flags, const std::string& keep_quantized_help,
                    const std::string& readable_names_help) {
  cmd->add_flag("--allow-unknown-globals", flags.allow_unknown_globals,
                "pickles: keep objects of unknown classes as opaque values instead of refusing (nothing is ever run)");
  cmd->add_flag("--keep-quantized", flags.keep_quantized, keep_quantized_help);
  cmd->add_flag("--readable-names", flags.readable_names, readable_names_help);
}

namespace {

using json = nlohmann::ordered_json;

// ------------------------------------------------------------------------------------------------
// inspect
// ------------------------------------------------------------------------------------------------
struct InspectArgs {
  std::string path;
  bool json = false;
  LoadFlags load;
};

void run_inspect(const InspectArgs& a) {
  Checkpoint ck = load(a.path, a.load.options());
  std::vector<NonTensor> non_tensors;
  StateDict sd = ck.state_dict({}, &non_tensors);

  // Storage sharing: tensors viewing one buffer (the first such tensor and how many), and views
  // smaller than their storage. Names of the sharers are gathered only for shared storages.
  struct Sharing {
    size_t first = 0, count = 0;
    std::vector<std::string> names;  // filled for count > 1
  };
  std::unordered_map<const Storage*, Sharing> by_storage;
  by_storage.reserve(sd.size());
  std::vector<Sharing*> sharing_of(sd.size());  // per tensor (map nodes do not move)
  for (size_t i = 0; i < sd.size(); ++i) {
    sharing_of[i] = &by_storage.try_emplace(sd.entries()[i].second.storage().get(), Sharing{i, 0, {}}).first->second;
    ++sharing_of[i]->count;
  }
  for (size_t i = 0; i < sd.size(); ++i)
    if (sharing_of[i]->count > 1) sharing_of[i]->names.push_back(sd.entries()[i].first);

  if (a.json) {
    json j;
    j["file"] = a.path;
    j["format"] = ck.format;
    // A list, not an object: a key may repeat (one "view smaller than its storage" per tensor).
    json info = json::array();
    for (const auto& [k, v] : ck.info) info.push_back({{"key", k}, {"value", v}});
    j["info"] = info;
    json tensors = json::array();
    for (size_t i = 0; i < sd.size(); ++i) {
      const auto& [k, t] = sd.entries()[i];
      json e;
      e["name"] = k;
      e["dtype"] = std::string(dtype_name(t.dtype()));
      e["shape"] = t.shape();
      e["nbytes"] = t.nbytes();
      const auto& sharers = sharing_of[i]->names;
      if (sharers.size() > 1 || t.storage()->nbytes() != t.nbytes()) {
        e["storage_nbytes"] = t.storage()->nbytes();
        if (sharers.size() > 1) {
          json others = json::array();
          for (const auto& o : sharers)
            if (o != k) others.push_back(o);
          e["shares_storage_with"] = others;
        }
      }
      tensors.push_back(e);
    }
    j["tensors"] = tensors;
    json meta = json::object();
    for (const auto& [k, v] : sd.metadata) meta[k] = v;
    j["metadata"] = meta;
    json nt = json::object();
    for (const auto& n : non_tensors) nt[n.path.empty() ? "(root)" : n.path] = n.repr;
    j["non_tensors"] = nt;
    j["total_tensors"] = sd.size();
    j["total_bytes"] = sd.total_bytes();
    std::cout << j.dump(2) << "\n";
    return;
  }

  std::cout << "file:    " << a.path << "\n";
  std::cout << "format:  " << ck.format << "\n";
  for (const auto& [k, v] : ck.info) std::cout << "  " << k << ": " << v << "\n";
  size_t wn = 4, wd = 5, ws = 5;
  for (const auto& [k, t] : sd) {
    wn = std::max(wn, k.size());
    wd = std::max(wd, dtype_name(t.dtype()).size());
    ws = std::max(ws, shape_str(t.shape()).size());
  }
  wn = std::min<size_t>(wn, 60);
  std::cout << "tensors: " << sd.size() << " (" << human_bytes(sd.total_bytes()) << ")\n";
  if (!sd.empty()) {
    std::cout << "  " << std::left << std::setw(int(wn)) << "name"
              << "  " << std::setw(int(wd)) << "dtype"
              << "  " << std::setw(int(ws)) << "shape"
              << "  " << std::right << std::setw(12) << "bytes"
              << "\n";
    // One line per tensor, padded by hand into one buffer (100,000-tensor files: iostream
    // formatting was a tenth of the whole inspect).
    std::string out;
    auto pad_right = [&](std::string_view v, size_t w) {
      out += v;
      if (v.size() < w) out.append(w - v.size(), ' ');
    };
    for (size_t i = 0; i < sd.size(); ++i) {
      const auto& [k, t] = sd.entries()[i];
      out += "  ";
      pad_right(k, wn);
      out += "  ";
      pad_right(dtype_name(t.dtype()), wd);
      out += "  ";
      pad_right(shape_str(t.shape()), ws);
      std::string n = std::to_string(t.nbytes());
      out.append(n.size() < 12 ? 12 - n.size() + 2 : 2, ' ');
      out += n;
      const Sharing& sharing = *sharing_of[i];
      const std::string& first = sd.entries()[sharing.first].first;
      if (sharing.count > 1 && first != k)
        out += "  (shares storage with " + first + ")";
      else if (t.storage()->kind() != Storage::Kind::Mapped && t.storage()->nbytes() > t.nbytes() && sharing.count == 1)
        out += "  (view of a " + std::to_string(t.storage()->nbytes()) + "-byte storage)";
      out += '\n';
      if (out.size() > (1u << 20)) {
        std::cout << out;
        out.clear();
      }
    }
    std::cout << out;
  }
  if (!sd.metadata.empty()) {
    std::cout << "metadata:\n";
    for (const auto& [k, v] : sd.metadata)
      std::cout << "  " << k << ": " << (v.size() > 200 ? v.substr(0, 200) + "..." : v) << "\n";
  }
  if (!non_tensors.empty()) {
    std::cout << "other values:\n";
    for (const auto& n : non_tensors)
      std::cout << "  " << (n.path.empty() ? "(root)" : n.path) << " = " << n.repr << "\n";
  }
}

// ------------------------------------------------------------------------------------------------
// diff
// ------------------------------------------------------------------------------------------------
struct DiffArgs {
  std::string a, b, key_a, key_b;
  double rtol = 0, atol = 0;
  bool json = false;
};

void run_diff(const DiffArgs& args) {
  DiffReport d;
  try {
    StateDict a = load(args.a).state_dict(args.key_a);
    StateDict b = load(args.b).state_dict(args.key_b);
    d = diff_state_dicts(a, b, args.rtol, args.atol);
  } catch (const Error& e) {
    std::cerr << "tensorbridge: " << e.what() << "\n";
    throw ExitCode{2};
  }
  if (args.json) {
    json j;
    j["equal"] = d.equal();
    j["only_in_a"] = d.only_a;
    j["only_in_b"] = d.only_b;
    json ts = json::array();
    for (const auto& t : d.tensors) {
      json e;
      e["name"] = t.name;
      e["equal"] = t.equal;
      e["bit_exact"] = t.bit_exact;
      if (!t.problem.empty()) e["problem"] = t.problem;
      e["max_abs_error"] = t.max_abs;
      e["max_rel_error"] = std::isinf(t.max_rel) ? json("inf") : json(t.max_rel);
      ts.push_back(e);
    }
    j["tensors"] = ts;
    std::cout << j.dump(2) << "\n";
  } else {
    for (const auto& k : d.only_a) std::cout << "only in A: " << k << "\n";
    for (const auto& k : d.only_b) std::cout << "only in B: " << k << "\n";
    size_t same = 0;
    for (const auto& t : d.tensors) {
      if (t.bit_exact) {
        ++same;
        continue;
      }
      std::cout << (t.equal ? "close:     " : "different: ") << (t.name.empty() ? "(the array)" : t.name);
      if (!t.problem.empty())
        std::cout << " (" << t.problem << ")";
      else
        std::cout << " (max abs error " << t.max_abs << ", max rel error " << t.max_rel << ")";
      std::cout << "\n";
    }
    std::cout << same << " of " << d.tensors.size() << " common tensors identical; " << d.only_a.size()
              << " only in A, " << d.only_b.size() << " only in B: " << (d.equal() ? "EQUAL" : "DIFFERENT") << "\n";
  }
  if (!d.equal()) throw ExitCode{1};
}

// ------------------------------------------------------------------------------------------------
// roundtrip
// ------------------------------------------------------------------------------------------------
struct RoundTripArgs {
  std::string file, key;
  std::vector<std::string> via;
  bool json = false;
};

std::vector<std::string> split_commas(const std::vector<std::string>& in) {
  std::vector<std::string> out;
  for (const auto& s : in) {
    size_t pos = 0;
    while (pos <= s.size()) {
      size_t c = s.find(',', pos);
      std::string part = s.substr(pos, c == std::string::npos ? std::string::npos : c - pos);
      if (!part.empty()) out.push_back(part);
      if (c == std::string::npos) break;
      pos = c + 1;
    }
  }
  return out;
}

void print_round_trip_table(const std::vector<RoundTripRow>& rows, const std::string& from) {
  std::cout << std::left << std::setw(20) << "via" << std::setw(12) << "result"
            << "detail\n";
  for (const auto& r : rows)
    std::cout << std::left << std::setw(20) << (from + "->" + r.via) << std::setw(12) << r.status << r.detail << "\n";
}

void run_roundtrip(const RoundTripArgs& args) {
  Checkpoint c = load(args.file);
  StateDict sd = c.state_dict(args.key);
  TB_CHECK(!sd.empty(), FormatError, "'", args.file, "' holds no tensors to round-trip");
  std::vector<std::string> vias = split_commas(args.via);
  if (vias.empty()) vias = writable_formats();
  for (const auto& v : vias) {
    const auto* f = find_format(v);
    TB_CHECK(f && f->save, UnsupportedError, "--via ", v, ": not a writable format");
  }
  const FormatAdapter* back = find_format(c.format);
  std::string back_format = back && back->save ? c.format : "safetensors";
  // A .npy holding many tensors (a pickled dict, as np.save of a dict writes) cannot be written back
  // as one plain array: the tensors come back through .npz, the .npy's many-array sibling.
  if (back_format == "npy" && sd.size() > 1) back_format = "npz";
  ScratchDir scratch;
  auto rows = round_trip(sd, back_format, vias, scratch.path());
  const bool ok = round_trip_exit_code(rows) == 0;
  if (args.json) {
    json j = json::array();
    for (const auto& r : rows) j.push_back({{"via", r.via}, {"result", r.status}, {"detail", r.detail}});
    std::cout << json{{"file", args.file}, {"format", c.format}, {"rows", j}, {"ok", ok}}.dump(2) << "\n";
  } else {
    std::cout << args.file << " (" << c.format << ", " << sd.size() << " tensors): " << c.format << " -> FORMAT -> "
              << back_format << ", compared bit for bit\n";
    print_round_trip_table(rows, c.format);
    std::map<std::string, size_t> count;
    for (const auto& r : rows) ++count[r.status];
    std::cout << count["bit-exact"] << " bit-exact, " << count["DIFFERENT"] << " different, " << count["error"]
              << " errors, " << count[kCannotHold] << " cannot hold the content: "
              << (ok                                                              ? "OK"
                  : count["bit-exact"] + count["DIFFERENT"] + count["error"] == 0 ? "NOTHING CHECKED"
                                                                                  : "NOT OK")
              << "\n";
  }
  if (!ok) throw ExitCode{1};
}

// ------------------------------------------------------------------------------------------------
// formats
// ------------------------------------------------------------------------------------------------
void run_formats() {
  for (const auto* f : all_formats()) {
    std::string exts;
    for (const auto& e : f->extensions) exts += (exts.empty() ? "" : " ") + e;
    std::cout << std::left << std::setw(15) << f->name << std::setw(6) << (f->save ? "rw" : "r") << std::setw(34)
              << f->description << (exts.empty() ? "" : "  ") << exts << "\n";
    for (const auto& o : f->save_options) std::cout << "      --option " << o.key << "=...  " << o.help << "\n";
  }
}

}  // namespace

void register_commands(CLI::App& app) {
  auto inspect_args = std::make_shared<InspectArgs>();
  auto* inspect = app.add_subcommand("inspect", "Show the format, tensors, metadata and other values of a file");
  inspect->add_option("file", inspect_args->path, "weight file or folder")->required();
  inspect->add_flag("--json", inspect_args->json, "machine-readable output");
  add_load_flags(inspect, inspect_args->load,
                 "gguf: keep quantized tensors as raw uint8 blocks instead of dequantizing them to float32",
                 kReadableNamesHelp);
  inspect->footer("Example:\n  tensorbridge inspect mlp.params\n  tensorbridge inspect --json model.safetensors");
  inspect->callback([inspect_args] { run_inspect(*inspect_args); });

  register_convert(app);

  auto diff_args = std::make_shared<DiffArgs>();
  auto* diff = app.add_subcommand(
      "diff", "Compare the tensors of two files of any formats (exit 0 equal, 1 different, 2 error)");
  diff->add_option("a", diff_args->a, "first file")->required();
  diff->add_option("b", diff_args->b, "second file")->required();
  diff->add_option("--rtol", diff_args->rtol, "relative tolerance (default 0: exact)");
  diff->add_option("--atol", diff_args->atol, "absolute tolerance (default 0: exact)");
  diff->add_option("--key-a", diff_args->key_a, "sub-tree of A to compare");
  diff->add_option("--key-b", diff_args->key_b, "sub-tree of B to compare");
  diff->add_flag("--json", diff_args->json, "machine-readable output");
  diff->footer(
      "Example:\n  tensorbridge diff mlp.params mlp.safetensors --rtol 1e-6\nExit codes: 0 equal, 1 different, 2 "
      "error");
  diff->callback([diff_args] { run_diff(*diff_args); });

  auto rt_args = std::make_shared<RoundTripArgs>();
  auto* rt = app.add_subcommand("roundtrip", "Convert a file to each format and back, and check it is bit-exact");
  rt->add_option("file", rt_args->file, "weight file")->required();
  rt->add_option("--via", rt_args->via, "formats to go through, comma separated (default: every writable format)");
  rt->add_option("--key", rt_args->key, "sub-tree of a checkpoint to use");
  rt->add_flag("--json", rt_args->json, "machine-readable output");
  rt->footer("Example:\n  tensorbridge roundtrip mlp.params --via safetensors,npz,h5");
  rt->callback([rt_args] { run_roundtrip(*rt_args); });

  auto demo_dir = std::make_shared<std::string>("fixtures");
  auto* demo =
      app.add_subcommand("demo", "Run the main job on the bundled fixtures (every format, round trips, one table)");
  demo->add_option("fixtures", *demo_dir, "fixtures folder (default: fixtures)");
  demo->callback([demo_dir] {
    int rc = run_demo(*demo_dir);
    if (rc != 0) throw ExitCode{rc};
  });

  register_nn_commands(app);

  auto* formats = app.add_subcommand("formats", "List the supported formats");
  formats->callback([] { run_formats(); });
}

}  // namespace tb::cli
