// The explicit list of formats, detection (content first, extension second) and the one-call
// load/save entry points used by the CLI and by library users.
#pragma once

#include <string_view>

#include "formats/format.h"

namespace tb {

/** Every adapter, in sniffing order. */
const std::vector<const FormatAdapter*>& all_formats();
/** By name ("pt", "safetensors", ...) or nullptr. */
const FormatAdapter* find_format(std::string_view name);
/** Sniffs the content, then falls back to the extension; throws FormatError describing the bytes. */
const FormatAdapter& detect_format(const Source& src);
/** Output format from an explicit name, else from the path's extension; throws with the choices. */
const FormatAdapter& output_format(const std::filesystem::path& path, std::string_view name = {});

/** Throws UnsupportedError naming the keys f accepts when opts holds a key f's writer does not read
 *  (save() checks this; callers of FormatAdapter::save call it themselves). */
void check_save_options(const FormatAdapter& f, const std::filesystem::path& path, const SaveOptions& opts);

/** Loads any supported file or folder. */
Checkpoint load(const std::filesystem::path& path, const LoadOptions& opts = {});
/** Saves in the named format (or the one the extension implies). */
void save(const Checkpoint& ckpt, const std::filesystem::path& path, std::string_view format = {},
          const SaveOptions& opts = {});

}  // namespace tb
