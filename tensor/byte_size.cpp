#include "tensor/byte_size.h"

#include <cctype>
#include <cmath>
#include <map>

#include "tensor/error.h"

namespace tb {

uint64_t parse_byte_size(std::string_view text, std::string_view what) {
  std::string s;
  for (char c : text)
    if (!std::isspace(static_cast<unsigned char>(c)) && c != '_')
      s += char(std::toupper(static_cast<unsigned char>(c)));
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  TB_CHECK(i > 0 && i <= 24, UnsupportedError, what, " '", text, "' must start with a number (e.g. 5GB, 512M, 2GiB)");
  double num = 0;
  try {
    num = std::stod(s.substr(0, i));
  } catch (...) {
    throw UnsupportedError(str(what, " '", text, "' is not a number"));
  }
  static const std::map<std::string, double> units = {{"", 1},
                                                      {"B", 1},
                                                      {"KB", 1e3},
                                                      {"MB", 1e6},
                                                      {"GB", 1e9},
                                                      {"TB", 1e12},
                                                      {"K", 1024.0},
                                                      {"M", 1048576.0},
                                                      {"G", 1073741824.0},
                                                      {"T", 1099511627776.0},
                                                      {"KIB", 1024.0},
                                                      {"MIB", 1048576.0},
                                                      {"GIB", 1073741824.0},
                                                      {"TIB", 1099511627776.0}};
  const std::string unit = s.substr(i);
  auto u = units.find(unit);
  TB_CHECK(u != units.end(), UnsupportedError, what, " '", text, "': unknown unit '", unit,
           "' (use B, K, M, G, T, KB, MB, GB, TB, KiB, MiB, GiB or TiB)");
  const double bytes = std::floor(num * u->second);
  TB_CHECK(bytes >= 0 && bytes < 1.8e19, UnsupportedError, what, " '", text, "' is out of range");
  return uint64_t(bytes);
}

}  // namespace tb
