// Protocol 0's text forms of strings (Python 2 pickles): quoted STRING literals and UNICODE lines in
// raw-unicode-escape; see pickle_vm.h.
#include "formats/detail/pickle_vm.h"

namespace tb::pickle {

namespace {

// Parses n hex digits; false on a non-hex character.
bool parse_hex(const std::string& s, size_t pos, size_t n, uint32_t* out) {
  uint32_t v = 0;
  if (pos + n > s.size()) return false;
  for (size_t i = pos; i < pos + n; ++i) {
    char c = s[i];
    int d = (c >= '0' && c <= '9')   ? c - '0'
            : (c >= 'a' && c <= 'f') ? c - 'a' + 10
            : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                     : -1;
    if (d < 0) return false;
    v = (v << 4) | uint32_t(d);
  }
  *out = v;
  return true;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

}  // namespace

std::string decode_string_literal(const std::string& s, const std::string& at) {
  TB_CHECK(s.size() >= 2 && (s[0] == '\'' || s[0] == '"') && s.back() == s[0], FormatError, at, ": bad STRING literal");
  std::string out;
  for (size_t i = 1; i + 1 < s.size(); ++i) {
    char c = s[i];
    if (c != '\\' || i + 2 >= s.size()) {
      out.push_back(c);
      continue;
    }
    char e = s[++i];
    switch (e) {
      case 'n': out.push_back('\n'); break;
      case 't': out.push_back('\t'); break;
      case 'r': out.push_back('\r'); break;
      case 'x': {
        uint32_t hv = 0;
        TB_CHECK(parse_hex(s, i + 1, 2, &hv), FormatError, at, ": bad \\x escape");
        out.push_back(char(hv));
        i += 2;
        break;
      }
      default: out.push_back(e);
    }
  }
  return out;
}

std::string decode_raw_unicode(const std::string& s, const std::string& at) {
  // Decode \uXXXX escapes; other bytes are latin-1 code points.
  std::string res;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == 'u' || s[i + 1] == 'U')) {
      size_t nd = s[i + 1] == 'u' ? 4 : 8;
      TB_CHECK(i + 2 + nd <= s.size(), FormatError, at, ": bad UNICODE escape");
      uint32_t cp = 0;
      TB_CHECK(parse_hex(s, i + 2, nd, &cp) && cp < 0x110000, FormatError, at, ": bad UNICODE escape");
      append_utf8(res, cp);
      i += 1 + nd;
    } else {
      append_utf8(res, (unsigned char)s[i]);
    }
  }
  return res;
}

}  // namespace tb::pickle
