// NumPy .npz archives: a zip of "<key>.npy" members (layout in npy.h and formats/detail/zip.h).
#include <algorithm>

#include "formats/adapters.h"
#include "formats/detail/zip.h"
#include "formats/naming.h"
#include "formats/npy.h"

namespace tb {

Checkpoint load_npz(const Source& src, const LoadOptions& opts) {
  TB_CHECK(src.reader != nullptr, FormatError, "[npz] '", src.label(), "' is a folder, not a .npz file");
  zip::ZipReader zr(src.reader);
  LoadBudget budget(opts.limits, src.label(), src.reader->size());
  Checkpoint c;
  c.format = "npz";
  c.root = Value::dict();
  size_t stored = 0, deflated = 0;
  std::vector<std::string> other;
  for (const auto& e : zr.entries()) {
    if (!e.name.ends_with(".npy")) {
      if (!e.name.ends_with("/")) other.push_back(e.name);
      continue;
    }
    std::string key = naming::decode_name(e.name.substr(0, e.name.size() - 4), naming::Target::Npz);
    (e.stored() ? stored : deflated)++;
    try {
      budget.tick("reading the archive's members");
      zr.check_claim(e);
      if (!e.stored()) budget.charge_bytes(e.uncompressed_size, str("inflating member '", e.name, "'"));
      c.root.set_item(Value::string(key), load_npy_value(zr.open(e), opts, budget));
    } catch (Error& err) {
      err.add_context(str("while reading member '", e.name, "' of '", src.label(), "'"));
      throw;
    }
  }
  TB_CHECK(stored + deflated > 0 || zr.entries().empty(), FormatError, "[npz] '", src.label(),
           "': a zip archive without any .npy member (members: ", zr.entries().front().name, ", ...)");
  c.info.emplace_back("arrays", std::to_string(stored + deflated));
  c.info.emplace_back("compression", deflated == 0 ? "stored (np.savez)"
                                     : stored == 0 ? "deflate (np.savez_compressed)"
                                                   : "mixed");
  if (zr.zip64()) c.info.emplace_back("zip64", "yes");
  if (!other.empty()) {
    std::string names;
    for (const auto& n : other) names += (names.empty() ? "" : ", ") + n;
    c.info.emplace_back("ignored members", names);
  }
  return c;
}

void write_npz(const Checkpoint& ckpt, const std::filesystem::path& path, const NpzWriteOptions& opts) {
  const std::string P = path.string();
  // Members are named by the naming rule (formats/naming.h): no member can leave the folder it is
  // extracted into, and a lone unnamed array is "arr_0" as np.savez(x) names it.
  std::vector<std::pair<std::string, Tensor>> items;
  StateDict sd = ckpt.state_dict();
  std::vector<std::string> names = naming::stored_names(sd, naming::Target::Npz);
  for (size_t i = 0; i < sd.size(); ++i) items.emplace_back(names[i], sd.entries()[i].second);
  AtomicFileWriter w(path, opts.overwrite);
  zip::WriteOptions zo;
  zo.align = 64;  // with numpy's 64-byte headers the array data is then 64-aligned in the file (zero-copy reads)
  zip::ZipWriter zw(w, zo);
  for (const auto& [name, t] : items) {
    std::string header = npy_header_bytes(t.dtype(), t.shape());
    uint64_t size = header.size() + t.nbytes();
    auto produce = [&, &header = header, &t = t](Writer& out) {
      out.write(header);
      out.write_tensor(t);
    };
    try {
      if (opts.compress)
        zw.add_deflated(name + ".npy", size, produce);
      else
        zw.add_stored(name + ".npy", size, produce);
    } catch (Error& e) {
      e.add_context(str("while writing '", name, "' to '", P, "'"));
      throw;
    }
  }
  zw.finish();
  w.commit();
}

void save_npz(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts) {
  npz_format().save(ckpt, path, opts);
}

namespace {
bool sniff_npz(const Source& s) {
  if (!s.reader || !zip::looks_like_zip(*s.reader)) return false;
  try {
    zip::ZipReader zr(s.reader);
    bool npy = false;
    for (const auto& e : zr.entries()) {
      if (e.name.ends_with("data.pkl")) return false;  // a torch archive
      npy = npy || e.name.ends_with(".npy");
    }
    return npy;
  } catch (const Error&) {
    throw;  // a broken zip (truncated, zip bomb): the registry reports why if nothing else matches
  } catch (...) {
    return false;
  }
}
}  // namespace

const FormatAdapter& npz_format() {
  static const FormatAdapter a = with_writer<NpzWriteOptions>(
      {.name = "npz",
       .description = "NumPy .npz archive (np.savez / np.savez_compressed)",
       .extensions = {".npz"},
       .sniff = sniff_npz,
       .load = [](const Source& s, const LoadOptions& o) { return load_npz(s, o); }},
      {flag_option<NpzWriteOptions>("compress", &NpzWriteOptions::compress,
                                    "1 deflates members as np.savez_compressed (default 0)")},
      write_npz);
  return a;
}

}  // namespace tb
