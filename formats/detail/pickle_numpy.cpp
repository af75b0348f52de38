// numpy's rules for pickles: reading arrays, dtypes and scalars, and writing arrays; see pickle_numpy.h.
#include "formats/detail/pickle_numpy.h"

#include "formats/detail/pickle_rules.h"
#include "tensor/checked.h"

namespace tb::pickle {

namespace {

// numpy.dtype(descr, align, copy) -> Object{cls "numpy.dtype", args Str descr}; BUILD sets byte order.
std::string np_descr_of(const Value& dt, const std::string& where) {
  TB_CHECK(dt.kind() == Value::Kind::Object && dt.as_object().cls == "numpy.dtype", FormatError, where,
           ": expected a numpy.dtype but found ", brief(dt));
  return dt.as_object().args->as_str();
}

struct DtypeBits {
  bool object = false;
  DType dtype = DType::F32;
  bool big = false;
};

DtypeBits np_dtype_bits(const std::string& descr, const std::string& where) {
  DtypeBits b;
  if (descr.size() >= 2 && descr[1] == 'O') {
    b.object = true;
    return b;
  }
  auto d = dtype_from_npy_descr(descr);
  TB_CHECK(d.has_value(), UnsupportedError, where, ": numpy dtype '", descr,
           "' is not supported (structured, string and datetime dtypes are not tensors)");
  b.dtype = d->dtype;
  b.big = d->big_endian;
  return b;
}

Tensor np_tensor_from_bytes(const std::string& data, const DtypeBits& bits, const Shape& shape, bool fortran,
                            const std::string& where) {
  size_t need = checked_nbytes(checked_numel(shape, where), dtype_size(bits.dtype), where);
  TB_CHECK(data.size() == need, FormatError, where, ": numpy array ", dtype_name(bits.dtype), shape_str(shape),
           " needs ", need, " bytes but its pickle holds ", data.size());
  Tensor t;
  if (fortran && shape.size() > 1) {
    Shape rev(shape.rbegin(), shape.rend());
    Tensor f = Tensor::from_bytes(bits.dtype, rev, data.data(), data.size());
    std::vector<int64_t> perm;
    for (int64_t i = int64_t(shape.size()) - 1; i >= 0; --i) perm.push_back(i);
    t = f.permute(perm).contiguous();
  } else {
    t = Tensor::from_bytes(bits.dtype, shape, data.data(), data.size());
  }
  if (bits.big) byteswap_elements(t.data(), bits.dtype, size_t(t.numel()));
  return t;
}

Value new_ndarray(Context&, const std::string&, Value, const ValueList&) { return Value::object("numpy.ndarray"); }

// state (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
std::optional<Value> build_dtype(Context& c, Value& obj, const Value& state) {
  TB_CHECK(state.kind() == Value::Kind::Tuple && state.items().size() >= 2, FormatError, c.at(),
           ": numpy.dtype state must be a tuple but is ", brief(state));
  const auto& s = state.items();
  if (s.size() > 3 && !s[3].is_none())
    throw UnsupportedError(str(c.at(), ": structured numpy dtype (fields) is not supported"));
  if (s.size() > 2 && !s[2].is_none()) throw UnsupportedError(str(c.at(), ": numpy sub-array dtype is not supported"));
  auto& o = obj.as_object();
  std::string d = o.args->as_str();
  std::string order = s[1].as_str();
  if (order == "=") order = "<";
  if (!d.empty() && (d[0] == '=' || d[0] == '<' || d[0] == '>' || d[0] == '|')) d = d.substr(1);
  *o.args = Value::string(order + d);
  return std::nullopt;
}

// state (version, shape, dtype, fortran, data): the array becomes a tensor (or, for object arrays,
// a list or its single element) everywhere it is referenced.
std::optional<Value> build_ndarray(Context& c, Value&, const Value& state) {
  TB_CHECK(state.kind() == Value::Kind::Tuple && (state.items().size() == 5 || state.items().size() == 4), FormatError,
           c.at(), ": numpy.ndarray state must be a 4- or 5-tuple but is ", brief(state));
  const auto& s = state.items();
  size_t i = s.size() == 5 ? 1 : 0;
  Shape shape = shape_of(
      s[i], [&c] { return c.at(); }, "numpy array shape");
  std::string descr = np_descr_of(s[i + 1], c.at());
  bool fortran = s[i + 2].as_bool();
  const Value& data = s[i + 3];
  DtypeBits bits = np_dtype_bits(descr, c.at());
  if (bits.object) {
    int64_t n = checked_numel(shape);
    TB_CHECK(data.kind() == Value::Kind::List && int64_t(data.items().size()) == n, FormatError, c.at(),
             ": numpy object array of shape ", shape_str(shape), " needs a list of ", n, " objects but has ",
             brief(data));
    if (shape.empty()) return data.items()[0];
    TB_CHECK(shape.size() == 1, UnsupportedError, c.at(), ": numpy object arrays with ", shape.size(),
             " dimensions are not supported (only 0-d and 1-d)");
    c.charge_values(data.items().size());
    return Value::list(data.items());
  }
  TB_CHECK(data.kind() == Value::Kind::Bytes || data.kind() == Value::Kind::Str, FormatError, c.at(),
           ": numpy array data must be bytes but is ", brief(data));
  const std::string& raw = data.as_str();
  c.charge_bytes(raw.size(), "a numpy array's data");
  // Python-2 'str' data read as text: undo nothing (bytes kept raw by the VM)
  return Value::tensor(np_tensor_from_bytes(raw, bits, shape, fortran, c.at()));
}

}  // namespace

void add_numpy_rules(Globals& g) {
  g.add("numpy.core.multiarray._reconstruct", {[](Context& c, const std::string& q, Value, const ValueList& a) {
          c.nargs(q, a, 3, 3);
          return Value::object("numpy.ndarray");
        }});
  g.add("numpy.core._internal._reconstruct", *g.find("numpy.core.multiarray._reconstruct"));
  g.add("numpy.ndarray", {new_ndarray, new_ndarray});
  g.add("numpy.dtype", {[](Context& c, const std::string& q, Value, const ValueList& a) {
          c.nargs(q, a, 1, 3);
          std::string d = a[0].as_str();
          // numpy pickles the dtype's kind+size without byte order ("f8"); BUILD adds it.
          if (!d.empty() && d[0] != '<' && d[0] != '>' && d[0] != '|' && d[0] != '=') d = "=" + d;
          return Value::object("numpy.dtype", Value::string(d));
        }});
  g.add("numpy.core.multiarray.scalar", {[](Context& c, const std::string& q, Value, const ValueList& a) {
          c.nargs(q, a, 1, 2);
          std::string descr = np_descr_of(a[0], c.at());
          DtypeBits bits = np_dtype_bits(descr, c.at());
          if (bits.object) return a.size() > 1 ? a[1] : Value();
          TB_CHECK(a.size() == 2, FormatError, c.at(), ": numpy scalar without data");
          c.charge_bytes(a[1].as_str().size(), "a numpy scalar");
          return Value::tensor(np_tensor_from_bytes(a[1].as_str(), bits, {}, false, c.at()));
        }});
  g.on_build("numpy.dtype", build_dtype);
  g.on_build("numpy.ndarray", build_ndarray);
}

// ---- writing ----------------------------------------------------------------------------------------

void write_numpy_dtype_call(Pickler& p, const std::string& kind_size) {
  p.global_("numpy", "dtype");
  p.string(kind_size);
  p.boolean(false);
  p.boolean(true);
  p.tuple_n(3);
  p.reduce();
}

void write_numpy_dtype_state(Pickler& p, const std::string& byteorder, int64_t flags) {
  // (version, byteorder, subarray, names, fields, elsize, alignment, flags)
  p.mark();
  p.integer(3);
  p.string(byteorder);
  p.none();
  p.none();
  p.none();
  p.integer(-1);
  p.integer(-1);
  p.integer(flags);
  p.tuple();
  p.build();
}

void write_numpy_dtype(Pickler& p, const std::string& descr) {
  if (p.get_keyed("numpy.dtype " + descr)) return;
  write_numpy_dtype_call(p, descr.substr(1));
  p.key_last("numpy.dtype " + descr);
  p.commit();
  write_numpy_dtype_state(p, descr.substr(0, 1), 0);
}

void write_numpy_reconstruct(Pickler& p) {
  p.global_("numpy.core.multiarray", "_reconstruct");
  p.commit();
  p.global_("numpy", "ndarray");
  p.integer(0);
  p.tuple_n(1);
  p.commit();
  if (!p.get_keyed("b'b'")) {  // one bytes object in CPython: memoised once at protocol 4+
    p.bytes_("b");
    p.key_last("b'b'");
  }
  p.tuple_n(3);
  p.reduce();
}

void write_numpy_shape(Pickler& p, const Shape& shape) {
  if (shape.size() > 3) {
    p.commit();
    p.mark();
  }
  for (int64_t d : shape) p.integer(d);
  shape.size() > 3 ? p.tuple() : p.tuple_n(shape.size());
}

void write_numpy_array(Pickler& p, const Tensor& t, const std::string& descr) {
  write_numpy_reconstruct(p);
  p.commit();
  p.mark();
  p.integer(1);
  write_numpy_shape(p, t.shape());
  p.commit();
  write_numpy_dtype(p, descr);
  p.boolean(false);
  p.commit();
  std::string raw(t.nbytes(), '\0');
  t.copy_to(raw.data());
  p.bytes_(raw);
  p.tuple();
  p.build();
}

}  // namespace tb::pickle
