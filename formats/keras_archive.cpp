// Keras 3 `.keras` archives (model.save('m.keras')): a zip of config.json (the architecture),
// metadata.json (keras_version, date_saved) and model.weights.h5 (the Keras 3 weights layout, read
// by the h5 reader from a temporary copy of the member, removed after the load, or from its bytes). The config
// reaches the checkpoint's metadata as "model_config", where nn finds a Keras architecture (as for a full-model .h5);
// writing needs it back (a Keras-origin source), and stores members uncompressed as Keras does.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/adapters.h"
#include "formats/detail/zip.h"
#include "formats/h5.h"
#include "tensor/atomic_output.h"
#include "tensor/temp_cleanup.h"

namespace tb {

namespace {

constexpr const char* kWeights = "model.weights.h5";
constexpr const char* kConfig = "config.json";
constexpr const char* kMeta = "metadata.json";
/** config.json and metadata.json are read whole: a bound a real model's config stays far below. */
constexpr uint64_t kMaxJson = uint64_t(64) << 20;

bool sniff_keras(const Source& s) {
  if (!s.reader || !zip::looks_like_zip(*s.reader)) return false;
  try {
    zip::ZipReader zr(s.reader);
    return zr.find(kConfig) && zr.find(kWeights);
  } catch (const Error&) {
    throw;  // a broken zip: the registry quotes the reason if nothing else matches
  } catch (...) {
    return false;
  }
}

std::string read_json_member(const zip::ZipReader& zr, const zip::Entry& e, LoadBudget& budget,
                             const std::string& label) {
  TB_CHECK(e.uncompressed_size <= kMaxJson, FormatError, "[keras] '", label, "': member '", e.name, "' claims ",
           e.uncompressed_size, " bytes; a Keras ", e.name, " is far smaller (limit ", kMaxJson, ")");
  zr.check_claim(e);
  budget.charge_bytes(e.uncompressed_size, str("member '", e.name, "'"));
  std::string text = zr.read_string(e);
  try {
    if (nlohmann::json::parse(text).is_discarded()) throw FormatError("unreachable");
  } catch (const nlohmann::json::exception& err) {
    throw FormatError(str("[keras] '", label, "': member '", e.name, "' is not valid JSON: ", err.what()));
  }
  return text;
}

/** A Keras 2 model_config (a full-model .h5) in the form Keras 3 deserializes: classes get their
 *  module, InputLayer its batch_shape, BatchNormalization an int axis. Functional graphs keep Keras 2's inbound_nodes,
 * which Keras 3 cannot read: those are refused by the caller. */
void upgrade_keras2_config(nlohmann::json& j, bool model_level) {
  if (j.is_array()) {
    for (auto& e : j) upgrade_keras2_config(e, false);
    return;
  }
  if (!j.is_object()) return;
  if (j.contains("class_name") && j.contains("config") && !j.contains("module")) {
    std::string cls = j["class_name"].is_string() ? j["class_name"].get<std::string>() : "";
    bool model = model_level || cls == "Sequential" || cls == "Functional" || cls == "Model";
    j["module"] = model ? "keras" : "keras.layers";
    j["registered_name"] = nullptr;
    auto& c = j["config"];
    if (cls == "InputLayer" && c.is_object() && c.contains("batch_input_shape") && !c.contains("batch_shape")) {
      c["batch_shape"] = c["batch_input_shape"];
      c.erase("batch_input_shape");
    }
    if (cls == "BatchNormalization" && c.is_object() && c.contains("axis") && c["axis"].is_array() &&
        c["axis"].size() == 1)
      c["axis"] = c["axis"][0];  // Keras 2 wrote [3]; Keras 3 takes an int
  }
  for (auto& [k, v] : j.items())
    if (k == "config" || k == "layers") upgrade_keras2_config(v, false);
}

constexpr const char* kTempPrefix = "tensorbridge-keras-";

/** A temporary copy of the weights member, removed when this goes (the tensors read from it stay:
 *  owned copies, or mappings that keep the removed file's pages). While it lives, the copy is flock()ed
 *  and registered with the SIGINT/SIGTERM cleanup; a copy left by a killed process (lock free) is
 *  removed by the next .keras load that makes one. */
struct TempCopy {
  std::filesystem::path path;
  std::unique_ptr<DirHandle> dir;
  std::string name;
  int lock_fd = -1;  // a descriptor of the copy holding its flock for the whole load
  TempRegistration registration;
  TempCopy() = default;
  TempCopy(const TempCopy&) = delete;
  TempCopy& operator=(const TempCopy&) = delete;
  ~TempCopy() {
    if (dir && !name.empty()) ::unlinkat(dir->fd(), name.c_str(), 0);
    registration.release();
    if (lock_fd >= 0) ::close(lock_fd);
  }
};

/** The weights member copied to a file in $TMPDIR (or /tmp), readable by path: HDF5 opens files by path,
 *  so the h5 reader then reads or maps it as a .weights.h5 file instead of copying the member into
 *  memory three times (for its probe, as an image, and inside HDF5's core driver). Null when no such
 *  file can be made (a full or read-only temporary folder): the caller reads the member's bytes. */
std::shared_ptr<Reader> member_as_temp_file(const Reader& member, bool mmap, TempCopy& tmp) {
  const char* env = std::getenv("TMPDIR");
  const std::string folder = env && *env ? env : "/tmp";
  try {
    tmp.dir = std::make_unique<DirHandle>(folder, folder);
  } catch (const std::exception&) {
    return nullptr;
  }
  remove_unlocked_files(*tmp.dir, [](const std::string& n) { return n.starts_with(kTempPrefix); });
  std::string name = folder + "/" + kTempPrefix + "XXXXXX";
  const int fd = ::mkostemp(name.data(), O_CLOEXEC);
  if (fd < 0) return nullptr;
  tmp.path = name;
  tmp.name = tmp.path.filename().string();
  tmp.lock_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (tmp.lock_fd >= 0)
    while (::flock(tmp.lock_fd, LOCK_SH) != 0 && errno == EINTR) {}  // shared: HDF5 takes its own
  tmp.registration = TempRegistration(tmp.dir->fd(), tmp.name, false);
  std::vector<uint8_t> buf(size_t(std::min<uint64_t>(member.size(), uint64_t(8) << 20)));
  for (uint64_t at = 0; at < member.size();) {
    const size_t n = size_t(std::min<uint64_t>(buf.size(), member.size() - at));
    member.read_at(at, buf.data(), n);
    for (size_t done = 0; done < n;) {
      const ssize_t w = ::write(fd, buf.data() + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        ::close(fd);
        return nullptr;
      }
      done += size_t(w);
    }
    at += n;
  }
  return open_fd(fd, member.label(), mmap);
}

}  // namespace

Checkpoint load_keras_archive(const Source& src, const LoadOptions& opts) {
  TB_CHECK(src.reader != nullptr, FormatError, "[keras] '", src.label(), "' is a folder, not a .keras file");
  zip::ZipReader zr(src.reader);
  LoadBudget budget(opts.limits, src.label(), src.reader->size());
  const zip::Entry* w = zr.find(kWeights);
  const zip::Entry* cfg = zr.find(kConfig);
  TB_CHECK(w && cfg, FormatError, "[keras] '", src.label(), "': a .keras archive needs ", kConfig, " and ", kWeights);
  std::string config = read_json_member(zr, *cfg, budget, src.label());
  zr.check_claim(*w);
  if (!w->stored()) budget.charge_bytes(w->uncompressed_size, str("inflating member '", w->name, "'"));
  Source weights;
  weights.reader = zr.open(*w);  // a view of the archive when stored (as Keras writes it)
  TempCopy tmp;
  if (w->stored())
    if (auto file = member_as_temp_file(*weights.reader, opts.mmap, tmp)) {
      weights.reader = std::move(file);
      weights.path = tmp.path;
    }
  LoadOptions inner = opts;
  Checkpoint c = load_h5(weights, inner);
  c.format = "keras";
  c.metadata["model_config"] = config;
  c.info.insert(c.info.begin(), {"archive", str(kConfig, " + ", kWeights)});
  if (const zip::Entry* m = zr.find(kMeta)) {
    auto meta = nlohmann::json::parse(read_json_member(zr, *m, budget, src.label()));
    if (meta.is_object())
      for (const char* k : {"keras_version", "date_saved"})
        if (meta.contains(k) && meta[k].is_string()) {
          c.info.emplace_back(k, meta[k].get<std::string>());
          c.metadata[k] = meta[k].get<std::string>();
        }
  }
  for (const auto& e : zr.entries())
    if (e.name != kWeights && e.name != kConfig && e.name != kMeta) c.info.emplace_back("ignored member", e.name);
  return c;
}

namespace {
/** The .keras writer's options: only overwrite; it takes no --option keys. */
struct KerasArchiveWriteOptions : WriteOptions {};

void write_keras_archive(const Checkpoint& ckpt, const std::filesystem::path& path,
                         const KerasArchiveWriteOptions& opts) {
  auto cfg = ckpt.metadata.find("model_config");
  TB_CHECK(cfg != ckpt.metadata.end(), UnsupportedError, "[keras] cannot write '", path.string(),
           "': a .keras archive holds the model's architecture (config.json) and this source has none (only a "
           ".keras or a Keras full-model .h5 has one); write the weights with --to keras3-h5 instead");
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(cfg->second);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(str("[keras] cannot write '", path.string(), "': metadata model_config is not JSON: ", e.what()));
  }
  if (config.is_object() && !config.contains("module")) {  // Keras 2 (a full-model .h5)
    TB_CHECK(config.value("class_name", std::string()) == "Sequential", UnsupportedError, "[keras] cannot write '",
             path.string(), "': the source's Keras 2 model_config is a ", config.value("class_name", std::string("?")),
             " model; only Sequential ones convert to a Keras 3 config (write the weights with --to keras3-h5)");
    upgrade_keras2_config(config, true);
  }
  // The weights file gets the weights and the Keras 3 layer names, not the archive's own entries.
  Checkpoint weights = ckpt;
  for (const char* k : {"model_config", "keras_version", "date_saved", "backend", "training_config"})
    weights.metadata.erase(k);
  std::vector<uint8_t> h5 = keras3_weights_bytes(weights);
  auto kv = ckpt.metadata.find("keras_version");
  std::string version = kv != ckpt.metadata.end() && kv->second.rfind("3.", 0) == 0 ? kv->second : "3.0.0";
  char date[32];
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(date, sizeof date, "%Y-%m-%d@%H:%M:%S", &tm);
  nlohmann::json meta = {{"keras_version", version}, {"date_saved", date}};
  AtomicFileWriter w(path, opts.overwrite);
  zip::ZipWriter zw(w);
  zw.add_stored(kMeta, meta.dump());
  zw.add_stored(kConfig, config.dump());
  zw.add_stored(kWeights, h5.data(), h5.size());
  zw.finish();
  w.commit();
}

}  // namespace

const FormatAdapter& keras_archive_format() {
  static const FormatAdapter a =
      with_writer<KerasArchiveWriteOptions>({.name = "keras",
                                             .description = "Keras 3 .keras archive (config.json + model.weights.h5)",
                                             .extensions = {".keras"},
                                             .sniff = sniff_keras,
                                             .load = load_keras_archive},
                                            {}, write_keras_archive);
  return a;
}

}  // namespace tb
