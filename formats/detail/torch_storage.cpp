// Torch persistent ids and zip storage records; see torch_storage.h.
#include "formats/detail/torch_storage.h"

#include "formats/detail/pickle_rules.h"

namespace tb::torch_storage {

namespace {

// dtype of a storage class ("torch.FloatStorage", "torch.cuda.HalfStorage"); U8 for UntypedStorage.
DType storage_dtype(const std::string& q, const std::string& where) {
  const std::string_view name = std::string_view(q).substr(q.rfind('.') + 1);
  if (name == "UntypedStorage" || name == "_UntypedStorage") return DType::U8;
  auto d = dtype_from_torch_storage(name);
  TB_CHECK(d.has_value(), UnsupportedError, where, ": storage type '", q,
           "' is not supported (quantized storages are not tensors we can convert)");
  return *d;
}

}  // namespace

Pid parse_pid(const Value& pid, const std::string& where) {
  TB_CHECK(pid.kind() == Value::Kind::Tuple && pid.items().size() >= 5 && pid.items()[0].is_str() &&
               pid.items()[0].as_str() == "storage",
           FormatError, where, ": persistent id must be ('storage', type, key, location, numel) but is ", pid.repr());
  const auto& it = pid.items();
  const std::string* qp = pickle::global_name(it[1]);  // a class reference pushed by GLOBAL
  TB_CHECK(qp && !qp->empty(), FormatError, where, ": persistent id storage type is not a class: ", it[1].repr());
  const std::string& q = *qp;
  Pid p;
  p.dtype = storage_dtype(q, where);
  TB_CHECK(it[2].is_str(), FormatError, where, ": storage key must be a str but is ", it[2].repr());
  p.key = it[2].as_str();
  p.location = it[3].is_str() ? it[3].as_str() : "";
  p.numel = it[4].as_int();
  TB_CHECK(p.numel >= 0 && p.numel < (int64_t(1) << 56), FormatError, where, ": storage '", p.key,
           "' has an impossible element count ", p.numel);
  if (it.size() > 5) p.view_meta = it[5];
  return p;
}

ZipStorages::ZipStorages(const zip::ZipReader& z, std::string dir, bool big, const LoadOptions& opts,
                         LoadBudget& budget, std::string where)
    : z_(z), dir_(std::move(dir)), big_(big), mmap_(opts.mmap), budget_(budget), where_(std::move(where)) {}

namespace {
// The number a storage key spells in decimal as torch writes it ("0", "17"; no sign, no leading
// zero), or -1.
int64_t key_number(std::string_view key) {
  if (key.empty() || key.size() > 9 || (key[0] == '0' && key.size() > 1)) return -1;
  int64_t n = 0;
  for (char c : key) {
    if (c < '0' || c > '9') return -1;
    n = n * 10 + (c - '0');
  }
  return n;
}
}  // namespace

const zip::Entry* ZipStorages::record_of(const std::string& key) {
  // torch names the storages 0, 1, 2, ...: one pass over the members finds those records, so that
  // each storage costs a vector lookup instead of building its name and hashing it.
  if (!numbered_) {
    numbered_ = true;
    const auto& es = z_.entries();
    for (size_t i = 0; i < es.size() && es.size() < UINT32_MAX; ++i) {
      const std::string& name = es[i].name;
      if (name.size() <= dir_.size() || name.compare(0, dir_.size(), dir_) != 0) continue;
      const int64_t n = key_number(std::string_view(name).substr(dir_.size()));
      if (n < 0 || uint64_t(n) >= 2 * uint64_t(es.size())) continue;
      if (size_t(n) >= by_number_.size()) by_number_.resize(size_t(n) + 1, 0);
      by_number_[size_t(n)] = uint32_t(i + 1);
    }
  }
  const int64_t n = key_number(key);
  if (n >= 0 && size_t(n) < by_number_.size() && by_number_[size_t(n)]) return &z_.entries()[by_number_[size_t(n)] - 1];
  record_.assign(dir_).append(key);
  return z_.find(record_);  // other names, or none
}

Value ZipStorages::load(const Value& pid) {
  Pid p = parse_pid(pid, where_);
  const zip::Entry* e = record_of(p.key);
  TB_CHECK(e, FormatError, where_, ": storage '", p.key, "' has no record '", dir_, p.key, "'");
  // Loaded storages are kept by the index of their record: one vector slot, no second hash lookup.
  const size_t slot = size_t(e - z_.entries().data());
  if (by_entry_.empty()) by_entry_.resize(z_.entries().size());
  if (!by_entry_[slot].is_none()) return by_entry_[slot];
  size_t isz = dtype_size(p.dtype);
  uint64_t nbytes = uint64_t(p.numel) * isz;
  TB_CHECK(e->uncompressed_size >= nbytes, FormatError, where_, ": storage '", p.key, "' (", dtype_name(p.dtype), ", ",
           p.numel, " elements) needs ", nbytes, " bytes but record '", e->name, "' holds ", e->uncompressed_size);
  std::shared_ptr<Storage> st;
  if (e->stored() && !(e->flags & 1)) {  // the usual case: read or map the bytes in place
    const Reader& file = *z_.reader();
    TB_CHECK(e->data_offset <= file.size() && nbytes <= file.size() - e->data_offset, FormatError, where_,
             ": storage '", p.key, "' runs past the end of the file");
    if (!mmap_ || big_) {
      budget_.charge_bytes_lazy(nbytes, [&] { return str("storage '", p.key, "'"); });
      st = Storage::allocate(size_t(nbytes), false);
      if (nbytes) file.read_at(e->data_offset, st->data(), size_t(nbytes));
    } else {
      st = file.load(e->data_offset, size_t(nbytes));
    }
  } else {
    // Deflated (or refused) members: inflated, then copied into the storage.
    budget_.charge_bytes_lazy(LoadBudget::sat_add(e->uncompressed_size, nbytes),
                              [&] { return str("storage '", p.key, "'"); });
    auto member = z_.open(*e);
    st = Storage::allocate(size_t(nbytes), false);
    if (nbytes) member->read_at(0, st->data(), size_t(nbytes));
  }
  if (big_) {
    TB_CHECK(p.dtype != DType::U8 || isz == 1, UnsupportedError, where_, ": big-endian untyped storage");
    byteswap_elements(st->data(), p.dtype, size_t(p.numel));
  }
  bytes_ += nbytes;
  Value v = Value::tensor(Tensor(st, p.dtype, {p.numel}, {1}, 0));
  by_entry_[slot] = v;
  ++count_;
  return v;
}

}  // namespace tb::torch_storage
