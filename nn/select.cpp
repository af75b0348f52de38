#include "nn/select.h"

#include <cctype>
#include <regex>

namespace tb::nn {
namespace {

// Iterative glob with single-star backtracking (linear memory, no recursion).
bool match_set(const std::string& p, size_t& pi, char c, bool& ok) {
  // p[pi] == '['; on return pi is past ']'. ok=false when the set is unterminated (then '[' is literal).
  size_t i = pi + 1;
  bool neg = false;
  if (i < p.size() && (p[i] == '!' || p[i] == '^')) neg = true, ++i;
  bool hit = false, first = true;
  for (; i < p.size() && (p[i] != ']' || first); ++i, first = false) {
    if (i + 2 < p.size() && p[i + 1] == '-' && p[i + 2] != ']') {
      if (c >= p[i] && c <= p[i + 2]) hit = true;
      i += 2;
    } else if (p[i] == c) {
      hit = true;
    }
  }
  if (i >= p.size()) {
    ok = false;
    return false;
  }
  ok = true;
  pi = i + 1;
  return hit != neg;
}

std::string key_list(const StateDict& sd, size_t max = 20) {
  std::string s;
  size_t n = 0;
  for (auto& [k, t] : sd) {
    if (n++ == max) return s + ", ...";
    s += (s.empty() ? "" : ", ") + k;
  }
  return s;
}

void insert_unique(StateDict& out, const std::string& name, const Tensor& t, const std::string& from) {
  TB_CHECK(!out.contains(name), KeyError, "nn: renaming '", from, "' gives '", name,
           "', which another key already became");
  out.insert(name, t);
}

}  // namespace

bool glob_match(const std::string& p, const std::string& s) {
  size_t pi = 0, si = 0, star_p = std::string::npos, star_s = 0;
  while (si < s.size()) {
    if (pi < p.size()) {
      char pc = p[pi];
      if (pc == '*') {
        star_p = pi++;
        star_s = si;
        continue;
      }
      if (pc == '?') {
        ++pi, ++si;
        continue;
      }
      if (pc == '[') {
        size_t save = pi;
        bool ok = true;
        bool hit = match_set(p, pi, s[si], ok);
        if (ok) {
          if (hit) {
            ++si;
            continue;
          }
          pi = save;
        } else if (s[si] == '[') {
          ++pi, ++si;
          continue;
        }
      } else {
        if (pc == '\\' && pi + 1 < p.size()) pc = p[++pi];
        if (pc == s[si]) {
          ++pi, ++si;
          continue;
        }
      }
    }
    if (star_p == std::string::npos) return false;
    pi = star_p + 1;
    si = ++star_s;
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

StateDict select_keys(const StateDict& sd, const std::vector<std::string>& patterns, bool use_regex) {
  std::vector<std::regex> res;
  if (use_regex)
    for (auto& p : patterns) {
      try {
        res.emplace_back(p, std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        throw FormatError(str("nn: --select regex '", p, "' is invalid: ", e.what()));
      }
    }
  std::vector<bool> used(patterns.size(), false);
  StateDict out;
  out.metadata = sd.metadata;
  for (auto& [k, t] : sd) {
    bool keep = false;
    for (size_t i = 0; i < patterns.size(); ++i) {
      bool m = use_regex ? std::regex_match(k, res[i]) : glob_match(patterns[i], k);
      if (m) used[i] = keep = true;
    }
    if (keep) out.insert(k, t);
  }
  for (size_t i = 0; i < patterns.size(); ++i)
    TB_CHECK(used[i], KeyError, "nn: --select '", patterns[i], "' matches no key; keys are: ", key_list(sd));
  return out;
}

StateDict rename_keys(const StateDict& sd, const std::vector<std::string>& rules) {
  struct Rule {
    std::regex re;
    std::string repl;
  };
  std::vector<Rule> rs;
  for (auto& r : rules) {
    size_t eq = r.rfind('=');
    TB_CHECK(eq != std::string::npos && eq > 0, FormatError, "nn: --rename '", r,
             "' must be REGEX=REPLACEMENT, e.g. 'module.(.*)=\\1'");
    std::string pat = r.substr(0, eq), rep;
    // \1 -> $1 (std::regex_replace syntax); a literal '$' becomes '$$'.
    const std::string raw = r.substr(eq + 1);
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\\' && i + 1 < raw.size() && raw[i + 1] >= '0' && raw[i + 1] <= '9') {
        rep += '$';
        rep += raw[++i];
      } else if (raw[i] == '$' && !(i + 1 < raw.size() && (std::isdigit(uint8_t(raw[i + 1])) || raw[i + 1] == '$'))) {
        rep += "$$";
      } else {
        rep += raw[i];
      }
    }
    try {
      rs.push_back({std::regex(pat, std::regex::ECMAScript), rep});
    } catch (const std::regex_error& e) {
      throw FormatError(str("nn: --rename regex '", pat, "' is invalid: ", e.what()));
    }
  }
  StateDict out;
  out.metadata = sd.metadata;
  for (auto& [k, t] : sd) {
    std::string name = k;
    for (auto& r : rs)
      if (std::regex_match(k, r.re)) {
        name = std::regex_replace(k, r.re, r.repl, std::regex_constants::format_first_only);
        break;
      }
    TB_CHECK(!name.empty(), KeyError, "nn: --rename turns '", k, "' into an empty name");
    insert_unique(out, name, t, k);
  }
  return out;
}

StateDict strip_prefixes(const StateDict& sd, const std::vector<std::string>& prefixes) {
  StateDict out;
  out.metadata = sd.metadata;
  for (auto& [k, t] : sd) {
    std::string name = k;
    for (bool again = true; again;) {
      again = false;
      for (auto& p : prefixes)
        if (!p.empty() && name.size() > p.size() && name.compare(0, p.size(), p) == 0) {
          name = name.substr(p.size());
          again = true;
        }
    }
    insert_unique(out, name, t, k);
  }
  return out;
}

StateDict add_prefix(const StateDict& sd, const std::string& prefix) {
  StateDict out;
  out.metadata = sd.metadata;
  for (auto& [k, t] : sd) out.insert(prefix + k, t);
  return out;
}

}  // namespace tb::nn
