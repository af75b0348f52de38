// One parser for the byte sizes users type (--shard-size, --max-memory, the ONNX external-data
// threshold), so that every option reads "5GB", "512M" and "2GiB" the same way.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tb {

/** Parses "123", "1.5 kb", "500MB", "5GB" (decimal: KB = 1000), "512M", "8G" (K/M/G/T alone are
 *  binary: K = 1024), "2GiB" (binary). Case, spaces and underscores are ignored. Throws
 *  UnsupportedError naming what (e.g. "shard size") for anything else or an overflow (0 is a size: callers needing more
 * check). */
uint64_t parse_byte_size(std::string_view text, std::string_view what);

}  // namespace tb
