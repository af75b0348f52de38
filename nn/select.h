// Key selection and renaming on a StateDict (partial reuse: "use the first two layers of a trained
// net in a new one"). Tensors are shared, never copied; metadata is kept.
//
//   select_keys(sd, {"hidden.*"})                 glob: * any run (dots included), ? one char, [abc] a set
//   select_keys(sd, {"^hidden\\..*"}, true)       ECMAScript regex, must match the whole key
//   rename_keys(sd, {"module.(.*)=\\1"})           regex=replacement, \1..\9 (or $1) are groups, first
//                                                  matching rule wins, whole-key match
//   strip_prefixes(sd)                             removes leading "module." and "_orig_mod." (repeatedly,
//                                                  as DataParallel + torch.compile nest them)
#pragma once

#include <string>
#include <vector>

#include "tensor/state_dict.h"

namespace tb::nn {

/** fnmatch-style glob over the whole key: '*' matches any run (including '.'), '?' one character,
 *  '[...]' a set ('[!...]' negated), '\\' escapes. */
bool glob_match(const std::string& pattern, const std::string& key);

/** Keys matching any pattern (glob, or regex when use_regex), in the original order. Throws KeyError
 *  listing the available keys when a pattern matches nothing. */
StateDict select_keys(const StateDict& sd, const std::vector<std::string>& patterns, bool use_regex = false);

/** Renames by rules "REGEX=REPLACEMENT"; keys no rule matches keep their name. Throws KeyError when two
 *  keys end up with one name, and FormatError on a malformed rule or regex. */
StateDict rename_keys(const StateDict& sd, const std::vector<std::string>& rules);

/** Strips the given prefixes from the front of every key, repeatedly; the default is PyTorch's wrappers
 *  "module." (DataParallel/DDP) and "_orig_mod." (torch.compile). Throws KeyError on a collision. */
StateDict strip_prefixes(const StateDict& sd, const std::vector<std::string>& prefixes = {"module.", "_orig_mod."});

/** Adds a prefix to every key ("hidden." -> "encoder.hidden."). */
StateDict add_prefix(const StateDict& sd, const std::string& prefix);

}  // namespace tb::nn
