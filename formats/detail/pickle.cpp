// pickle.h's entry points: the VM (pickle_vm.cpp) with the caller's table, or the default tables.
#include "formats/detail/pickle.h"

#include "formats/detail/pickle_numpy.h"
#include "formats/detail/pickle_torch.h"
#include "formats/detail/pickle_vm.h"

namespace tb::pickle {

const Globals& default_globals() {
  static const Globals g = [] {
    Globals t;
    add_builtin_rules(t);
    add_torch_rules(t);
    add_numpy_rules(t);
    return t;
  }();
  return g;
}

namespace {
const Globals& torchscript_globals() {
  static const Globals g = [] {
    Globals t = default_globals();
    add_torchscript_rules(t);
    return t;
  }();
  return g;
}

const Globals& table_of(const Options& opts) {
  if (opts.globals) return *opts.globals;
  return opts.allow_torchscript_classes ? torchscript_globals() : default_globals();
}
}  // namespace

Result load_one(const Reader& reader, uint64_t offset, uint64_t size, const Options& opts) {
  return run_vm(reader, offset, size, opts, table_of(opts), false);
}

Value load(const Reader& reader, uint64_t offset, uint64_t size, const Options& opts) {
  return load_one(reader, offset, size, opts).value;
}

Value load(const std::vector<uint8_t>& bytes, const std::string& label, const Options& opts) {
  auto r = memory_reader(bytes, label);
  return load(*r, 0, r->size(), opts);
}

std::vector<std::string> globals_in(const Reader& reader, uint64_t offset, uint64_t size) {
  std::vector<std::string> seen;
  run_vm(reader, offset, size, Options{}, default_globals(), true, &seen);
  return seen;
}

bool is_allowed_global(const std::string& module, const std::string& name) {
  return default_globals().find(qualify(module, name)) != nullptr;
}

}  // namespace tb::pickle
