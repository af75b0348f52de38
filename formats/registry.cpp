#include "formats/registry.h"

#include <algorithm>
#include <cctype>
#include <new>

#include "formats/adapters.h"
#include "formats/typed_options.h"

namespace tb {

StateDict Checkpoint::state_dict(const std::string& key, std::vector<NonTensor>* skipped) const {
  // Made from flat entries and not changed since: those entries, not a second flatten of root.
  if (key.empty() && flat_ && root.identity() == flat_root_ && root.is_dict() &&
      root.dict_data().items.size() == flat_->size()) {
    StateDict sd = *flat_;
    sd.metadata = metadata;
    return sd;
  }
  const Value& sub = key.empty() ? root : value_at_path(root, key);
  StateDict sd = flatten(sub, skipped);
  sd.metadata = metadata;
  return sd;
}

StateDict Checkpoint::named_tensors() const {
  if (!root.is_tensor()) return state_dict();
  StateDict sd;
  sd.insert("tensor", root.as_tensor());
  sd.metadata = metadata;
  return sd;
}

Checkpoint Checkpoint::from_state_dict(const StateDict& sd, std::string format) {
  Checkpoint c;
  c.format = std::move(format);
  c.root = Value::from_state_dict(sd);
  c.metadata = sd.metadata;
  c.flat_ = std::make_shared<const StateDict>(sd);
  c.flat_root_ = c.root.identity();
  return c;
}

Source Source::from_path(const std::filesystem::path& p, bool use_mmap) {
  Source s;
  s.path = p;
  s.path_label = p.string();
  std::error_code ec;
  if (std::filesystem::is_directory(p, ec)) return s;
  // A TensorFlow checkpoint prefix ("ckpt-1" for ckpt-1.index + ckpt-1.data-*): a path that is no file.
  if (!std::filesystem::exists(p, ec) && std::filesystem::is_regular_file(p.string() + ".index", ec)) return s;
  TB_CHECK(std::filesystem::exists(p, ec), IoError, "'", p.string(), "' does not exist");
  s.reader = open_file(p, use_mmap);
  return s;
}

const std::vector<const FormatAdapter*>& all_formats() {
  // Sniff order matters: zip-based formats look at member names (pt before npz), and formats with
  // weak magic (onnx protobuf) come last; TorchScript is a torch.save-like zip with more records.
  static const std::vector<const FormatAdapter*> formats = {
      &torchscript_format(),   &pt_format(),        &npz_format(),
      &keras_archive_format(), &npy_format(),       &safetensors_format(),
      &gguf_format(),          &h5_format(),        &oneflow_format(),
      &tf_checkpoint_format(), &onnx_format(),      &onnx_tensor_format(),
      &keras_h5_format(),      &keras3_h5_format(),
  };
  return formats;
}

const FormatAdapter* find_format(std::string_view name) {
  for (const auto* f : all_formats())
    if (f->name == name) return f;
  return nullptr;
}

namespace {
std::string lower_ext(const std::filesystem::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return e;
}

const FormatAdapter* by_extension(const std::filesystem::path& p) {
  std::string e = lower_ext(p);
  if (e.empty()) return nullptr;
  for (const auto* f : all_formats())
    for (const auto& x : f->extensions)
      if (x == e) return f;
  return nullptr;
}

std::string describe_start(const Source& src) {
  if (!src.reader) return "a folder with no recognised layout";
  size_t n = size_t(std::min<uint64_t>(src.reader->size(), 64));
  auto b = src.reader->read_bytes(0, n);
  std::string text(b.begin(), b.end());
  b.resize(std::min<size_t>(n, 16));
  if (text.rfind("version https://git-lfs", 0) == 0) return "a Git LFS pointer, not the real file (run `git lfs pull`)";
  if (text.rfind("<!DOCTYPE", 0) == 0 || text.rfind("<html", 0) == 0 || text.rfind("<!doctype", 0) == 0)
    return "an HTML page, not a weight file (a failed download?)";
  if (n == 0) return "an empty file";
  if (text.rfind("PK\x03\x04", 0) == 0) return "a zip archive, not one torch or numpy can read";
  std::string hex;
  static const char* digits = "0123456789abcdef";
  for (uint8_t c : b) {
    hex += digits[c >> 4];
    hex += digits[c & 15];
    hex += ' ';
  }
  return "bytes " + hex.substr(0, hex.size() - 1);
}

std::string format_names() {
  std::string s;
  for (const auto* f : all_formats()) s += (s.empty() ? "" : ", ") + f->name;
  return s;
}
}  // namespace

const FormatAdapter& detect_format(const Source& src) {
  std::string sniff_error;  // the first reason a sniffer gave up (e.g. a zip bomb), for the message
  for (const auto* f : all_formats()) {
    bool yes = false;
    try {
      yes = f->sniff && f->sniff(src);
    } catch (const Error& e) {
      if (sniff_error.empty()) sniff_error = str("; checking it as ", f->name, ": ", e.message());
    } catch (...) {
      yes = false;
    }
    if (yes) return *f;
  }
  // Folders and files whose content matched nothing: an extension is only a hint for formats
  // without magic bytes (ONNX protobuf).
  if (const auto* f = by_extension(src.path); f && f->name == "onnx" && src.reader) return *f;
  throw FormatError(str("'", src.label(), "': not a recognised weight file (", describe_start(src), ")", sniff_error,
                        "; supported formats: ", format_names()));
}

const FormatAdapter& output_format(const std::filesystem::path& path, std::string_view name) {
  if (!name.empty()) {
    const auto* f = find_format(name);
    TB_CHECK(f != nullptr, UnsupportedError, "unknown format '", name, "'; choose one of: ", format_names());
    TB_CHECK(bool(f->save), UnsupportedError, "format '", name, "' can be read but not written");
    return *f;
  }
  const auto* f = by_extension(path);
  TB_CHECK(f != nullptr, UnsupportedError, "cannot tell the output format from '", path.string(),
           "'; use an extension (.pt .pth .npy .npz .h5 .onnx .safetensors .gguf .index) or --to FORMAT");
  TB_CHECK(bool(f->save), UnsupportedError, "format '", f->name, "' can be read but not written");
  return *f;
}

Checkpoint load(const std::filesystem::path& path, const LoadOptions& opts) {
  Source src = Source::from_path(path, opts.mmap);
  const FormatAdapter& f = detect_format(src);
  try {
    Checkpoint c = f.load(src, opts);
    c.format = f.name;
    return c;
  } catch (const std::bad_alloc&) {
    throw OutOfMemoryError(str("out of memory while loading '", src.label(), "' as ", f.name,
                               " (the load budget allowed it: the machine has less memory than the budget)"));
  } catch (Error& e) {
    // Every load error names the file: loaders that named only the tensor get the file added here.
    if (std::string_view(e.what()).find(src.label()) == std::string_view::npos)
      e.add_context(str("while loading '", src.label(), "' as ", f.name));
    throw;
  }
}

// A mistyped option would otherwise be ignored without a word (--option layuot=keras).
void check_save_options(const FormatAdapter& f, const std::filesystem::path& path, const SaveOptions& opts) {
  if (f.check_options) return f.check_options(opts, path);
  for (const auto& [key, value] : opts.options) {
    bool known = false;
    for (const auto& o : f.save_options) known = known || o.key == key;
    if (!known)
      throw UnsupportedError(str("cannot write '", path.string(), "' as ", f.name, ": unknown option '", key, "=",
                                 value, "'; ", accepted_options(f.name, f.save_options)));
  }
}

std::string accepted_options(const std::string& format, const std::vector<SaveOption>& options) {
  std::string accepted;
  for (const auto& o : options) accepted += str(accepted.empty() ? "" : "; ", o.key, ": ", o.help);
  return accepted.empty() ? str(format, " takes no options") : str(format, " accepts ", accepted);
}

void save(const Checkpoint& ckpt, const std::filesystem::path& path, std::string_view format, const SaveOptions& opts) {
  const FormatAdapter& f = output_format(path, format);
  if (!f.check_options) check_save_options(f, path, opts);  // a typed writer parses them in save()
  try {
    f.save(ckpt, path, opts);
  } catch (const std::bad_alloc&) {
    throw OutOfMemoryError(str("out of memory while writing '", path.string(), "' as ", f.name));
  } catch (Error& e) {
    if (std::string_view(e.what()).find(path.string()) == std::string_view::npos)
      e.add_context(str("while writing '", path.string(), "' as ", f.name));
    throw;
  }
}

}  // namespace tb
