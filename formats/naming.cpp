// The naming rule (formats/naming.h, docs/NAMING.md): per-target escaping of tensor names.
#include "formats/naming.h"

namespace tb::naming {

namespace {

constexpr std::string_view kEmptyName = "%_";

bool is_path(Target t) { return t == Target::Hdf5 || t == Target::Npz; }
bool is_file_name(Target t) { return is_path(t) || t == Target::Folder; }

/** Bytes escaped wherever they appear in a stored name (besides '%', escaped everywhere). */
bool escaped_anywhere(unsigned char c, Target t) {
  if (c == '%') return true;
  if (!is_file_name(t)) return false;
  if (c < 0x20 || c == 0x7f) return true;  // NUL ends a C string; the rest are hostile in file names
  if (c == '/') return true;               // reaches here only when it is not a separator
  return c == '\\' && t != Target::Hdf5;   // a folder separator where these are extracted on Windows
}

/** Bytes escaped only as the first byte of a component (to avoid ".", "..", reserved names). */
bool escaped_at_start(unsigned char c, Target t) {
  if (is_file_name(t) && c == '.') return true;
  if (t == Target::Folder && c == 's') return true;
  return t == Target::Safetensors && c == '_';
}

void append_escape(std::string& out, unsigned char c) {
  static const char* hex = "0123456789ABCDEF";
  out += '%';
  out += hex[c >> 4];
  out += hex[c & 15];
}

/** One stored component (no separator inside) from its raw text. */
std::string encode_one(std::string_view raw, Target t) {
  std::string out;
  out.reserve(raw.size() + 4);
  for (unsigned char c : raw) {
    if (escaped_anywhere(c, t))
      append_escape(out, c);
    else
      out += char(c);
  }
  bool reserved = (is_file_name(t) && (out == "." || out == "..")) || (t == Target::Folder && out == "snapshot_done") ||
                  (t == Target::Safetensors && out == "__metadata__");
  if (reserved) {
    unsigned char first = static_cast<unsigned char>(out[0]);
    std::string escaped;
    append_escape(escaped, first);
    out = escaped + out.substr(1);
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string encode_name(std::string_view name, Target t) {
  if (name.empty()) return std::string(kEmptyName);
  if (!is_path(t)) return encode_one(name, t);
  // A '/' separates components only between two non-empty ones; any other '/' is part of a
  // component (and escaped there), so no stored component is ever empty.
  std::string out, cur;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool next_nonempty = i + 1 < name.size() && name[i + 1] != '/';
    if (c == '/' && !cur.empty() && next_nonempty) {
      out += encode_one(cur, t);
      out += '/';
      cur.clear();
    } else {
      cur += c;
    }
  }
  out += encode_one(cur, t);
  return out;
}

std::string encode_component(std::string_view name, Target t) {
  return name.empty() ? std::string(kEmptyName) : encode_one(name, t);
}

std::string decode_name(std::string_view stored, Target t) {
  if (stored == kEmptyName) return {};
  std::string out;
  out.reserve(stored.size());
  bool component_start = true;
  for (size_t i = 0; i < stored.size(); ++i) {
    char c = stored[i];
    if (c == '%' && i + 2 < stored.size()) {
      int hi = hex_value(stored[i + 1]), lo = hex_value(stored[i + 2]);
      if (hi >= 0 && lo >= 0) {
        auto b = static_cast<unsigned char>(hi * 16 + lo);
        if (escaped_anywhere(b, t) || (component_start && escaped_at_start(b, t))) {
          out += char(b);
          i += 2;
          component_start = false;
          continue;
        }
      }
    }
    out += c;
    component_start = is_path(t) && c == '/';
  }
  return out;
}

std::vector<std::string> stored_names(const StateDict& sd, Target t) {
  std::vector<std::string> out;
  out.reserve(sd.size());
  if (sd.size() == 1 && sd.entries()[0].first.empty()) {
    out.emplace_back(kUnnamedTensor);
    return out;
  }
  for (const auto& [name, tensor] : sd) out.push_back(encode_name(name, t));
  return out;
}

StateDict with_unnamed_tensor_named(const StateDict& sd) {
  if (sd.size() != 1 || !sd.entries()[0].first.empty()) return sd;
  StateDict out;
  out.metadata = sd.metadata;
  out.insert(std::string(kUnnamedTensor), sd.entries()[0].second);
  return out;
}

}  // namespace tb::naming
