// torch's rules for the pickle VM; see pickle_torch.h.
#include "formats/detail/pickle_torch.h"

#include "tensor/checked.h"

namespace tb::pickle {

namespace {

// torch.float32 -> F32 (only direct attributes of the torch module).
std::optional<DType> torch_dtype_of_global(const std::string& q) {
  if (q.rfind("torch.", 0) != 0) return std::nullopt;
  std::string attr = q.substr(6);
  if (attr.find('.') != std::string::npos) return std::nullopt;
  return dtype_from_torch_dtype(attr);
}

// Parameter.__new__(cls, data, requires_grad) / Tensor: the data tensor is the value.
Value make_parameter(Context&, const std::string& q, Value args, const ValueList&) {
  if (args.is_sequence() && !args.items().empty() && args.items()[0].is_tensor()) return args.items()[0];
  return Value::object(q, std::move(args));
}

// Module classes, storage classes and the like: called or instantiated, they become opaque objects.
Value make_object(Context& c, const std::string& q, Value args, const ValueList&) {
  return c.instantiate(Value::object("global", Value::string(q)), std::move(args));
}

// _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]) and kin.
Value rebuild_tensor(Context& c, const std::string& fn, Value, const ValueList& a) {
  auto nargs = [&](size_t lo, size_t hi) {
    TB_CHECK(a.size() >= lo && a.size() <= hi, FormatError, c.at(), ": ", fn, " takes ", lo, "..", hi,
             " arguments but the pickle gives ", a.size());
  };
  const bool v2 = fn == "torch._utils._rebuild_tensor_v2";  // what torch.save writes for every tensor
  if (!v2 && (fn == "torch._utils._rebuild_parameter" || fn == "torch._utils._rebuild_parameter_with_state")) {
    nargs(2, 4);
    return a[0];
  }
  if (!v2 && (fn == "torch._tensor._rebuild_from_type_v2" || fn == "torch._tensor._rebuild_from_type")) {
    nargs(3, 4);
    return c.call(a[0], a[2]);
  }
  if (!v2 && fn == "torch._utils._rebuild_meta_tensor_no_storage")
    throw UnsupportedError(str(c.at(), ": tensor on the 'meta' device has no data"));
  bool v3 = !v2 && fn == "torch._utils._rebuild_tensor_v3";
  if (v2)
    nargs(6, 7);
  else if (fn == "torch._utils._rebuild_tensor")
    nargs(4, 4);
  else if (v3)
    nargs(7, 8);
  else
    throw UnsupportedError(str(c.at(), ": ", fn, " is not supported (quantized/sparse/nested tensors)"));
  const Value& storage = a[0];
  if (storage.is_none()) return Value();  // dry run (persistent_load returned None)
  TB_CHECK(storage.is_tensor(), FormatError, c.at(), ": ", fn, " expects a storage but got ", brief(storage));
  const Tensor& st = storage.as_tensor();
  DType dt = st.dtype();
  if (v3) {
    const std::string* dq = global_name(a[6]);
    TB_CHECK(dq && torch_dtype_of_global(*dq), FormatError, c.at(), ": ", fn,
             " expects a torch dtype as 7th argument but got ", brief(a[6]));
    dt = *torch_dtype_of_global(*dq);
  }
  int64_t off = a[1].as_int();
  auto loc = [&c] { return c.at(); };
  Shape size = shape_of(a[2], loc, "tensor size"), stride = shape_of(a[3], loc, "tensor stride");
  TB_CHECK(size.size() == stride.size(), FormatError, c.at(), ": tensor size ", shape_str(size), " and stride ",
           shape_str(stride), " differ in rank");
  TB_CHECK(off >= 0 && off < (int64_t(1) << 60), FormatError, c.at(), ": bad storage offset ", off);
  int64_t off_bytes = 0, byte_off = 0;  // checked; the message is built only on overflow
  if (__builtin_mul_overflow(off, int64_t(dtype_size(dt)), &off_bytes) ||
      __builtin_add_overflow(st.byte_offset(), off_bytes, &byte_off)) {
    const std::string off_what = str(c.at(), ": storage offset ", off, " of a ", dtype_name(dt), " tensor");
    byte_off = checked_add(st.byte_offset(), checked_mul(off, int64_t(dtype_size(dt)), off_what), off_what);
  }
  try {
    return Value::tensor(Tensor(st.storage(), dt, std::move(size), std::move(stride), byte_off));
  } catch (const ShapeError& e) {  // size and stride were moved: read them again for the message
    size = shape_of(a[2], loc, "tensor size");
    stride = shape_of(a[3], loc, "tensor stride");
    throw FormatError(str(c.at(), ": tensor ", dtype_name(dt), shape_str(size), " stride ", shape_str(stride),
                          " at element offset ", off, " does not fit its storage of ", st.storage()->nbytes(),
                          " bytes (", e.message(), ")"));
  }
}

}  // namespace

void add_torch_rules(Globals& g) {
  for (const char* q : {"torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
                        "torch._utils._rebuild_tensor_v3", "torch._utils._rebuild_parameter",
                        "torch._utils._rebuild_parameter_with_state", "torch._tensor._rebuild_from_type_v2",
                        "torch._tensor._rebuild_from_type", "torch._utils._rebuild_meta_tensor_no_storage"})
    g.add(q, {rebuild_tensor});
  g.add("torch.Size", {[](Context& c, const std::string& q, Value, const ValueList& a) {
          c.nargs(q, a, 0, 1);
          if (!a.empty()) c.charge_values(a[0].items().size());
          return Value::tuple(a.empty() ? ValueList{} : a[0].items());
        }});
  g.add("torch.device", {[](Context& c, const std::string& q, Value, const ValueList& a) {
          c.nargs(q, a, 1, 2);
          std::string s = a[0].as_str();
          if (a.size() == 2 && !a[1].is_none()) s += ":" + std::to_string(a[1].as_int());
          return Value::string(s);
        }});
  g.add("torch.serialization._get_layout", {[](Context& c, const std::string& q, Value, const ValueList& a) {
          c.nargs(q, a, 1, 1);
          return Value::string(a[0].as_str());
        }});
  for (const char* q : {"torch.Tensor", "torch.nn.parameter.Parameter", "torch.nn.parameter.Buffer"})
    g.add(q, {make_object, make_parameter});
  // Storage classes: referenced by persistent ids (formats/detail/torch_storage.h), never called.
  for (const auto& d : all_dtypes())
    if (!d.torch_storage.empty()) {
      g.add("torch." + std::string(d.torch_storage), {make_object});
      g.add("torch.cuda." + std::string(d.torch_storage), {make_object});
    }
  for (const char* q : {"torch.UntypedStorage", "torch.storage.UntypedStorage", "torch.storage._UntypedStorage",
                        "torch.storage.TypedStorage"})
    g.add(q, {make_object});
  // dtypes and layouts: class references, not callables.
  for (const auto& d : all_dtypes())
    if (!d.torch_dtype.empty() && torch_dtype_of_global("torch." + std::string(d.torch_dtype)))
      g.add("torch." + std::string(d.torch_dtype));
  for (const char* alias : {"float", "double", "half", "long", "int", "short", "cfloat", "cdouble"})
    if (torch_dtype_of_global(str("torch.", alias))) g.add(str("torch.", alias));
  for (const char* q : {"torch.strided", "torch.sparse_coo", "torch.contiguous_format", "torch.channels_last"})
    g.add(q);
  // torch's own module classes: instantiated as opaque objects with their state (never called);
  // torch 0.3 modules keep their backend as REDUCE of a function, kept opaque too.
  g.add_prefix("torch.nn.modules.", {make_object});
  g.add("torch.nn.backends.thnn._get_thnn_function_backend", {make_object});
}

void add_torchscript_rules(Globals& g) {
  const CallRule first_arg = [](Context& c, const std::string& q, Value, const ValueList& a) {
    c.nargs(q, a, 1, 2);
    return a[0];
  };
  for (const char* q :
       {"torch.jit._pickle.build_intlist", "torch.jit._pickle.build_doublelist", "torch.jit._pickle.build_boollist",
        "torch.jit._pickle.build_tensorlist", "torch.jit._pickle.restore_type_tag"})
    g.add(q, {first_arg});
  g.add_prefix("__torch__.");
}

}  // namespace tb::pickle
