// Writing numpy arrays and dtypes into a pickle; see pickle_numpy.h.
#include "formats/detail/pickle_numpy.h"

namespace tb::pickle {

void write_numpy_dtype(Pickler& p, const std::string& descr) {
  if (p.get_keyed("numpy.dtype " + descr)) return;
  p.global_("numpy", "dtype");
  p.string(descr.substr(1));
  p.boolean(false);
  p.boolean(true);
  p.tuple_n(3);
  p.reduce();
  p.key_last("numpy.dtype " + descr);
  // state (version, byteorder, subarray, names, fields, elsize, alignment, flags)
  p.commit();
  p.mark();
  p.integer(3);
  p.string(descr.substr(0, 1));
  p.none();
  p.none();
  p.none();
  p.integer(-1);
  p.integer(-1);
  p.integer(0);
  p.tuple();
  p.build();
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
