// `tensorbridge convert`: one pass over a stream of (name, tensor) entries.
//
// The input is loaded once and, unless the target keeps whole trees and no key is changed, flattened
// once into its entries; the stages (prefix strip, --style, --select, --select-regex, --rename, --dtype)
// each map that stream, and the writer receives the same entries (Checkpoint::from_state_dict keeps
// them, so it does not flatten again); the progress total is their byte count. A sharded input with
// --keep-shards or --shards runs the same stages on each input shard, on --jobs threads
// (formats/shard_by_shard.h).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>

#include "cli/commands.h"
#include "formats/registry.h"
#include "formats/safetensors.h"
#include "formats/shard_by_shard.h"
#include "models/compare.h"
#include "nn/select.h"
#include "nn/style.h"

namespace tb::cli {
namespace {

struct ConvertArgs {
  std::string input, output, to, key, dtype, style, shard_size, shards;
  std::vector<std::string> select, select_regex, rename;
  unsigned jobs = 0;  // 0: one per core
  LoadFlags load;
  // Keys and values: what goes to the output.
  bool strip_prefix = false, drop_non_tensors = false, state_dict_only = false;
  // Writing: the output file(s).
  bool keep_shards = false, force = false, trim_storage = false, compress = false;
  // Messages.
  bool quiet = false, verbose = false;
  std::vector<std::string> options;
  bool reshapes_keys() const {
    return !select.empty() || !select_regex.empty() || !rename.empty() || strip_prefix || !style.empty();
  }
  bool shard_by_shard() const { return keep_shards || !shards.empty(); }
};

// A progress bar on stderr while a conversion writes, only when stderr is a terminal. Writers on
// several threads report to it at once.
class ProgressBar {
 public:
  ProgressBar(uint64_t total, bool enabled) : total_(total), enabled_(enabled && ::isatty(2) && total > (16u << 20)) {
    start_ = last_ = std::chrono::steady_clock::now();
    if (enabled_) set_write_progress([this](uint64_t n) { add(n); });
  }
  ~ProgressBar() {
    if (!enabled_) return;
    set_write_progress(nullptr);
    std::fprintf(stderr, "\r%*s\r", 72, "");
  }
  void add(uint64_t n) {
    std::lock_guard<std::mutex> g(m_);
    done_ += n;
    auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(100) && done_ < total_) return;
    last_ = now;
    double secs = std::chrono::duration<double>(now - start_).count();
    double frac = total_ ? std::min(1.0, double(done_) / double(total_)) : 1.0;
    double rate = secs > 0 ? double(done_) / secs : 0;
    double eta = rate > 0 ? double(total_ > done_ ? total_ - done_ : 0) / rate : 0;
    int filled = int(frac * 30);
    std::fprintf(stderr, "\r[%-30s] %3d%%  %s/s  ETA %.0fs ", std::string(size_t(filled), '#').c_str(), int(frac * 100),
                 human_bytes(uint64_t(rate)).c_str(), eta);
  }

 private:
  std::mutex m_;
  uint64_t total_, done_ = 0;
  bool enabled_;
  std::chrono::steady_clock::time_point start_, last_;
};

// --dtype: floating-point tensors are cast (round to nearest even); integer and bool tensors
// (num_batches_tracked, masks) keep their dtype.
DType float_target(const std::string& name) {
  auto to = dtype_from_name(name);
  TB_CHECK(to.has_value(), UnsupportedError, "--dtype ", name, ": unknown dtype (float32, float16, bfloat16, ...)");
  TB_CHECK(is_floating(*to), UnsupportedError, "--dtype ", name, ": only floating-point targets are supported");
  return *to;
}

StateDict cast_floating(const StateDict& sd, DType to) {
  StateDict out;
  out.metadata = sd.metadata;
  for (const auto& [k, t] : sd) {
    out.insert(k, is_floating(t.dtype()) ? t.to(to) : t);
    if (out.at(k).storage() != t.storage()) t.storage()->release_deferred();  // the cast copy is what is written
  }
  return out;
}

/** The stages every entry goes through, in this order: prefix strip, --style, --select, --select-regex,
 *  --rename, --dtype (--select and --rename see the names the output will have). */
struct Stages {
  const ConvertArgs& a;
  std::string style;  // --style, or "keras" chosen for a Keras target
  bool quantize = false;

  StateDict keys_only(StateDict s, bool with_style) const {
    if (a.strip_prefix) s = nn::strip_prefixes(s);
    if (with_style && !style.empty()) s = nn::convert_style(s, style);
    if (!a.select.empty()) s = nn::select_keys(s, a.select);
    if (!a.select_regex.empty()) s = nn::select_keys(s, a.select_regex, true);
    if (!a.rename.empty()) s = nn::rename_keys(s, a.rename);
    return s;
  }
  StateDict operator()(StateDict s) const {
    s = keys_only(std::move(s), true);
    if (!a.dtype.empty() && !quantize) s = cast_floating(s, float_target(a.dtype));
    return s;
  }
};

/** The SaveOptions the flags make; a mistyped or misplaced option fails here, before the input is read. */
SaveOptions save_options_of(const ConvertArgs& a, const FormatAdapter& out_fmt) {
  SaveOptions so;
  so.overwrite = a.force;
  if (a.trim_storage) so.options["trim_storage"] = "1";
  if (a.compress) so.options["compress"] = "1";
  for (const auto& kv : a.options) {
    size_t eq = kv.find('=');
    TB_CHECK(eq != std::string::npos && eq > 0, UnsupportedError, "--option ", kv, ": expected KEY=VALUE");
    so.options[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  // --dtype q8_0: GGUF's own block quantization, done by its writer.
  if (a.dtype == "q8_0") {
    TB_CHECK(out_fmt.name == "gguf", UnsupportedError, "--dtype q8_0 is supported for gguf output, not ", out_fmt.name);
    so.options["quantize"] = "q8_0";
  }
  if (!a.shard_size.empty()) {
    TB_CHECK(out_fmt.name == "safetensors", UnsupportedError, "--shard-size is supported for safetensors output, not ",
             out_fmt.name);
    so.options["shard_size"] = a.shard_size;
  }
  check_save_options(out_fmt, a.output, so);
  return so;
}

/** The entries of the input (flattened once), non-tensor values refused unless --drop-non-tensors. */
StateDict tensor_entries(const ConvertArgs& a, const Checkpoint& in, const FormatAdapter& out_fmt) {
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
  // GGUF holds metadata alone too (llama.cpp's vocab-only files); every other output needs a tensor.
  const bool metadata_only = out_fmt.name == "gguf" && a.key.empty() && !in.metadata.empty();
  TB_CHECK(!sd.empty() || metadata_only, FormatError, "'", a.input, "'", a.key.empty() ? "" : " under --key " + a.key,
           " holds no tensors; nothing to write");
  return sd;
}

/** A source structure the writer can keep (an ONNX graph) travels with the names it had on loading:
 *  the key stages replayed on one index per tensor give each new name its old one. */
NativeSource renamed_native(const ConvertArgs& a, const Checkpoint& in, const StateDict& sd, const Stages& stages) {
  TB_CHECK(a.style.empty(), UnsupportedError, "--style changes names and layouts that the graph of '", a.input,
           "' refers to; write the weights only with --option graph=drop");
  StateDict tags;
  for (size_t i = 0; i < sd.size(); ++i)
    tags.insert(sd.entries()[i].first, Tensor::from_vector<int64_t>(DType::I64, {}, {int64_t(i)}));
  NativeSource native = in.native;
  for (const auto& [name, t] : stages.keys_only(tags, false)) {
    const std::string& old = sd.entries()[size_t(t.to_vector<int64_t>()[0])].first;
    if (old != name) native.renamed_from[name] = old;
  }
  return native;
}

void write_with_progress(const ConvertArgs& a, const FormatAdapter& out_fmt, const Checkpoint& out, uint64_t total,
                         const SaveOptions& so) {
  {
    ProgressBar bar(total, !a.quiet);
    out_fmt.save(out, a.output, so);
  }
  if (!a.quiet) std::cerr << "wrote " << a.output << " (" << out_fmt.name << ", " << human_bytes(total) << ")\n";
}

/** --keep-shards / --shards i/n: each input shard of the slice through the stages into its output shard. */
void convert_shard_by_shard(const ConvertArgs& a, const FormatAdapter& out_fmt, const SaveOptions& so) {
  TB_CHECK(out_fmt.name == "safetensors", UnsupportedError, "--keep-shards and --shards write safetensors shards, not ",
           out_fmt.name);
  TB_CHECK(a.style.empty() && a.key.empty() && a.shard_size.empty(), UnsupportedError,
           "--keep-shards and --shards keep the input's split: --style (a layer may span shards), --key and "
           "--shard-size do not apply");
  const auto [slice, slices] = a.shards.empty() ? std::pair<size_t, size_t>{0, 1} : parse_slice(a.shards);
  const ShardList list = list_shards(Source::from_path(a.input, true));
  const size_t count = list.shards.size();
  const ShardTarget target = shard_target(a.output);
  check_single_output(target, a.force);
  const std::vector<size_t> mine = shards_of_slice(count, slice, slices);
  const unsigned jobs = a.jobs ? a.jobs : std::max(1u, std::thread::hardware_concurrency());
  LoadOptions lo = a.load.options();
  lo.deferred_decoding = true;  // each entry is read once, by the stages or the writer
  const std::string format_entry = so.option("format", "pt");
  Stages stages{a, {}, false};

  uint64_t total = 0;  // for the progress bar: the input shards' file sizes
  for (size_t k : mine) {
    std::error_code ec;
    total += std::filesystem::file_size(list.folder_path / list.shards[k], ec);
  }
  std::mutex say;
  {
    ProgressBar bar(total, !a.quiet);
    run_on_threads(mine, jobs, [&](size_t k) {
      Checkpoint in = load_listed_shard(list, k, lo);
      StateDict sd = stages(tensor_entries(a, in, out_fmt));
      write_output_shard(target, k, count, sd, safetensors_metadata(in.metadata, format_entry), a.force);
      if (a.verbose) {
        std::lock_guard<std::mutex> g(say);
        std::cerr << "shard " << k + 1 << " of " << count << ": " << list.shards[k] << " -> "
                  << shard_file_name(target.stem, k, count) << " (" << sd.size() << " tensors)\n";
      }
    });
  }
  const std::filesystem::path index = write_index_when_complete(target, count, a.force);
  if (a.quiet) return;
  std::cerr << "wrote " << mine.size() << " of " << count << " shards";
  if (!a.shards.empty()) std::cerr << " (slice " << slice << "/" << slices << ")";
  std::cerr << " into " << target.folder.string() << "; "
            << (index.empty() ? "the index waits for the other slices" : "index " + index.string()) << "\n";
}

void run_convert(const ConvertArgs& a) {
  const FormatAdapter& out_fmt = output_format(a.output, a.to);
  const SaveOptions so = save_options_of(a, out_fmt);
  TB_CHECK(a.jobs == 0 || a.shard_by_shard(), UnsupportedError,
           "--jobs converts the shards of a sharded input in parallel; it goes with --keep-shards or --shards");
  if (a.shard_by_shard()) return convert_shard_by_shard(a, out_fmt, so);

  LoadOptions lo = a.load.options(a.style == "torch");
  lo.deferred_decoding = true;  // each entry is read once, by the stages or the writer
  Checkpoint in = load(a.input, lo);
  if (out_fmt.name == "pt" && !a.state_dict_only)
    for (const auto& [k, v] : in.info)
      TB_CHECK(k != "whole module", UnsupportedError, "'", a.input, "' is a whole pickled module (", v,
               "); the .pt writer cannot write the module's class and code back, only its tensors: pass "
               "--state-dict-only to write its state dict");
  if (a.verbose) {
    std::cerr << "read " << a.input << " as " << in.format << "\n";
    for (const auto& [k, v] : in.info) std::cerr << "  " << k << ": " << v << "\n";
  }
  Stages stages{a, a.style, a.dtype == "q8_0"};

  if (out_fmt.keeps_tree && !a.reshapes_keys()) {  // the whole tree goes to the writer
    Checkpoint out;
    out.metadata = in.metadata;
    out.root = a.key.empty() ? in.root : value_at_path(in.root, a.key);
    if (!a.dtype.empty() && !stages.quantize) {
      DType to = float_target(a.dtype);
      out.root = map_tensors(out.root, [to](const Tensor& t) { return is_floating(t.dtype()) ? t.to(to) : t; });
    }
    std::vector<NonTensor> ignored;
    return write_with_progress(a, out_fmt, out, flatten(out.root, &ignored).total_bytes(), so);
  }

  StateDict sd = tensor_entries(a, in, out_fmt);
  NativeSource native;
  if (in.native.data && in.native.format == out_fmt.name) native = renamed_native(a, in, sd, stages);
  bool keras_target = out_fmt.name == "keras-h5" || out_fmt.name == "keras3-h5";
  if (stages.style.empty() && keras_target && looks_torch_style(a.strip_prefix ? nn::strip_prefixes(sd) : sd)) {
    stages.style = "keras";
    if (!a.quiet) std::cerr << "note: converting torch-style names and layouts to Keras style (--style keras)\n";
  }
  sd = stages(std::move(sd));
  Checkpoint out = Checkpoint::from_state_dict(sd);  // the writer takes these entries as they are
  out.native = std::move(native);
  write_with_progress(a, out_fmt, out, sd.total_bytes(), so);
}

}  // namespace

void register_convert(CLI::App& app) {
  auto convert_args = std::make_shared<ConvertArgs>();
  auto* convert = app.add_subcommand("convert", "Convert a weight file to another format");
  convert->add_option("input", convert_args->input, "input file or folder (format sniffed from the bytes)")->required();
  convert->add_option("output", convert_args->output, "output path (format from --to or the extension)")->required();
  convert->add_option("--to", convert_args->to,
                      "output format: pt, npy, npz, h5, onnx, safetensors, oneflow, gguf, tf-checkpoint");
  convert->add_option("--key", convert_args->key, "dotted path of the sub-tree to convert, e.g. model_state_dict");
  convert->add_option("--dtype", convert_args->dtype,
                      "cast floating-point tensors to this dtype (float32, float16, bfloat16; q8_0 for gguf output)");
  convert->add_option("--select", convert_args->select,
                      "keep only keys matching this glob (repeatable), e.g. 'hidden.*'; matched against the output's "
                      "names (after --style)");
  convert->add_option("--select-regex", convert_args->select_regex,
                      "keep only keys matching this regex (repeatable; output names, after --style)");
  convert->add_option("--rename", convert_args->rename,
                      "rename keys: REGEX=REPLACEMENT with \\1 groups (repeatable), e.g. 'module\\.(.*)=\\1'; applied "
                      "to the output's names (after --style)");
  convert->add_flag("--strip-prefix", convert_args->strip_prefix,
                    "remove leading 'module.' and '_orig_mod.' from keys");
  convert->add_option("--style", convert_args->style, "convert names and layouts: torch or keras")
      ->check(CLI::IsMember({"torch", "keras"}));
  convert->add_flag("--trim-storage", convert_args->trim_storage, ".pt output: save only the bytes each view uses");
  convert->add_option("--shard-size", convert_args->shard_size,
                      "safetensors output: shards of at most SIZE (e.g. 5GB) plus an index");
  convert->add_flag("--keep-shards", convert_args->keep_shards,
                    "sharded input (*.index.json or its folder): one safetensors shard per input shard plus an index, "
                    "converted on --jobs threads");
  convert->add_option(
      "--shards", convert_args->shards,
      "I/N: convert only slice I of N (0 <= I < N) of a sharded input, the input shards k with "
      "k % N == I (implies --keep-shards); after all N slices the output equals one --keep-shards convert");
  convert
      ->add_option("--jobs", convert_args->jobs,
                   "with --keep-shards/--shards: shards converted at once (default: one per core)")
      ->check(CLI::Range(1u, 1024u));
  convert->add_flag("--compress", convert_args->compress, ".npz output: deflate the members");
  convert->add_flag("-q,--quiet", convert_args->quiet, "no progress bar or notes");
  convert->add_flag("-v,--verbose", convert_args->verbose, "say what was read");
  add_load_flags(convert, convert_args->load,
                 "gguf: keep quantized tensors as raw uint8 blocks (gguf output writes them back as their type)",
                 str(kReadableNamesHelp, " (implied by --style torch)"));
  convert->add_option(
      "--option", convert_args->options,
      "format-specific KEY=VALUE (repeatable): layout=plain|keras|keras3 (h5), external_data=always (onnx), "
      "layout=pickle|single|snapshot (oneflow), format=none (safetensors), quantize=q8_0 (gguf)");
  convert->add_flag("--force", convert_args->force, "overwrite an existing output");
  convert->add_flag("--state-dict-only", convert_args->state_dict_only,
                    "a whole pickled module to .pt: write its state dict (the module itself cannot be written)");
  convert->add_flag("--drop-non-tensors", convert_args->drop_non_tensors,
                    "leave out values that are not tensors (epoch, loss, ...) instead of refusing");
  convert->footer(
      "Examples:\n"
      "  tensorbridge convert mlp.params mlp.safetensors\n"
      "  tensorbridge convert checkpoint.pt model.safetensors --key model_state_dict\n"
      "  tensorbridge convert model.pt weights.h5 --to keras-h5\n"
      "  tensorbridge convert weights.h5 model.pt --style torch\n"
      "  tensorbridge convert net.pt part.pt --select 'hidden.*' --rename 'hidden\\.(.*)=encoder.\\1'\n"
      "  tensorbridge convert llama/ out/ --keep-shards --jobs 2          # shard for shard, 2 at a time\n"
      "  tensorbridge convert llama/ out/ --shards 0/4                     # one of 4 machines' slices");
  convert->callback([convert_args] { run_convert(*convert_args); });
}

}  // namespace tb::cli
