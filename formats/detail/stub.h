// An adapter for a format this build cannot handle: it still sniffs (so the user learns what the
// file is) and explains how to get support. Used by the no_<dependency>.cpp files.
#pragma once

#include "formats/format.h"

namespace tb::detail {

inline FormatAdapter unavailable_adapter(std::string name, std::string description, std::vector<std::string> exts,
                                         std::function<bool(const Source&)> sniff, std::string why) {
  FormatAdapter a;
  a.name = name;
  a.description = std::move(description);
  a.extensions = std::move(exts);
  a.sniff = std::move(sniff);
  a.load = [name, why](const Source& src, const LoadOptions&) -> Checkpoint {
    throw UnsupportedError(str("[", name, "] '", src.label(), "': ", why));
  };
  a.save = [name, why](const Checkpoint&, const std::filesystem::path& p, const SaveOptions&) {
    throw UnsupportedError(str("[", name, "] cannot write '", p.string(), "': ", why));
  };
  return a;
}

}  // namespace tb::detail
