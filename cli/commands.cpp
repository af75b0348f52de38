#include "cli/commands.h"

#include <cstdio>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "formats/registry.h"

namespace tb::cli {
namespace {

using json = nlohmann::ordered_json;

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

// ------------------------------------------------------------------------------------------------
// inspect
// ------------------------------------------------------------------------------------------------
struct InspectArgs {
  std::string path;
  bool json = false;
};

void run_inspect(const InspectArgs& a) {
  Checkpoint ck = load(a.path);
  std::vector<NonTensor> non_tensors;
  StateDict sd = ck.state_dict({}, &non_tensors);

  // Storage sharing: tensors viewing one buffer, and views smaller than their storage.
  std::map<const Storage*, std::vector<std::string>> by_storage;
  for (const auto& [k, t] : sd) by_storage[t.storage().get()].push_back(k);

  if (a.json) {
    json j;
    j["file"] = a.path;
    j["format"] = ck.format;
    json info = json::object();
    for (const auto& [k, v] : ck.info) info[k] = v;
    j["info"] = info;
    json tensors = json::array();
    for (const auto& [k, t] : sd) {
      json e;
      e["name"] = k;
      e["dtype"] = std::string(dtype_name(t.dtype()));
      e["shape"] = t.shape();
      e["nbytes"] = t.nbytes();
      const auto& sharers = by_storage[t.storage().get()];
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
    std::cout << "  " << std::left << std::setw(int(wn)) << "name" << "  " << std::setw(int(wd)) << "dtype" << "  "
              << std::setw(int(ws)) << "shape" << "  " << std::right << std::setw(12) << "bytes" << "\n";
    for (const auto& [k, t] : sd) {
      std::cout << "  " << std::left << std::setw(int(wn)) << k << "  " << std::setw(int(wd)) << dtype_name(t.dtype())
                << "  " << std::setw(int(ws)) << shape_str(t.shape()) << "  " << std::right << std::setw(12)
                << t.nbytes();
      const auto& sharers = by_storage[t.storage().get()];
      if (sharers.size() > 1 && sharers.front() != k) std::cout << "  (shares storage with " << sharers.front() << ")";
      else if (t.storage()->kind() != Storage::Kind::Mapped && t.storage()->nbytes() > t.nbytes() && sharers.size() == 1)
        std::cout << "  (view of a " << t.storage()->nbytes() << "-byte storage)";
      std::cout << "\n";
    }
  }
  if (!sd.metadata.empty()) {
    std::cout << "metadata:\n";
    for (const auto& [k, v] : sd.metadata) std::cout << "  " << k << ": " << (v.size() > 200 ? v.substr(0, 200) + "..." : v) << "\n";
  }
  if (!non_tensors.empty()) {
    std::cout << "other values:\n";
    for (const auto& n : non_tensors) std::cout << "  " << (n.path.empty() ? "(root)" : n.path) << " = " << n.repr << "\n";
  }
}

// ------------------------------------------------------------------------------------------------
// convert
// ------------------------------------------------------------------------------------------------
struct ConvertArgs {
  std::string input, output, to, key;
  bool force = false;
  bool drop_non_tensors = false;
};

void run_convert(const ConvertArgs& a) {
  const FormatAdapter& out_fmt = output_format(a.output, a.to);
  Checkpoint in = load(a.input);

  Checkpoint out;
  out.metadata = in.metadata;
  if (out_fmt.keeps_tree) {
    out.root = a.key.empty() ? in.root : value_at_path(in.root, a.key);
  } else {
    std::vector<NonTensor> skipped;
    StateDict sd = in.state_dict(a.key, &skipped);
    if (!skipped.empty() && !a.drop_non_tensors) {
      std::string list;
      for (size_t i = 0; i < skipped.size() && i < 8; ++i)
        list += str("\n  ", skipped[i].path.empty() ? "(root)" : skipped[i].path, " = ", skipped[i].repr);
      if (skipped.size() > 8) list += str("\n  ... and ", skipped.size() - 8, " more");
      throw UnsupportedError(str("'", a.input, "' holds values that are not tensors, which ", out_fmt.name,
                                 " cannot store:", list,
                                 "\nselect the tensors with --key (e.g. --key model_state_dict) or pass "
                                 "--drop-non-tensors to leave them out"));
    }
    TB_CHECK(!sd.empty(), FormatError, "'", a.input, "'", a.key.empty() ? "" : " under --key " + a.key,
             " holds no tensors; nothing to write");
    out.root = Value::from_state_dict(sd);
  }
  SaveOptions so;
  so.overwrite = a.force;
  out_fmt.save(out, a.output, so);
  std::cerr << "wrote " << a.output << " (" << out_fmt.name << ")\n";
}

// ------------------------------------------------------------------------------------------------
// formats
// ------------------------------------------------------------------------------------------------
void run_formats() {
  for (const auto* f : all_formats()) {
    std::string exts;
    for (const auto& e : f->extensions) exts += (exts.empty() ? "" : " ") + e;
    std::cout << std::left << std::setw(12) << f->name << std::setw(6) << (f->save ? "rw" : "r") << std::setw(34)
              << f->description << exts << "\n";
  }
}

}  // namespace

void register_commands(CLI::App& app) {
  auto inspect_args = std::make_shared<InspectArgs>();
  auto* inspect = app.add_subcommand("inspect", "Show the format, tensors, metadata and other values of a file");
  inspect->add_option("file", inspect_args->path, "weight file or folder")->required();
  inspect->add_flag("--json", inspect_args->json, "machine-readable output");
  inspect->callback([inspect_args] { run_inspect(*inspect_args); });

  auto convert_args = std::make_shared<ConvertArgs>();
  auto* convert = app.add_subcommand("convert", "Convert a weight file to another format");
  convert->add_option("input", convert_args->input, "input file or folder (format sniffed from the bytes)")->required();
  convert->add_option("output", convert_args->output, "output path (format from --to or the extension)")->required();
  convert->add_option("--to", convert_args->to, "output format: pt, npy, npz, h5, onnx, safetensors, oneflow");
  convert->add_option("--key", convert_args->key, "dotted path of the sub-tree to convert, e.g. model_state_dict");
  convert->add_flag("--force", convert_args->force, "overwrite an existing output");
  convert->add_flag("--drop-non-tensors", convert_args->drop_non_tensors,
                    "leave out values that are not tensors (epoch, loss, ...) instead of refusing");
  convert->callback([convert_args] { run_convert(*convert_args); });

  auto* formats = app.add_subcommand("formats", "List the supported formats");
  formats->callback([] { run_formats(); });
}

}  // namespace tb::cli
