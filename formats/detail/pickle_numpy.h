// numpy's rules for pickles: how numpy arrays, dtypes and scalars inside a pickle become tensors
// (reader side, registered in a pickle::Globals table) and how a tensor is written as a numpy array
// (writer side, for np.save object arrays and flow.save single files). Nothing of numpy is run.
#pragma once

#include <string>

#include "formats/detail/pickle_writer.h"
#include "tensor/tensor.h"

namespace tb::pickle {

class Globals;

/** numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype, numpy.core.multiarray.scalar and
 *  their BUILD states: arrays become tensors (big-endian swapped, Fortran order made C order),
 *  object arrays lists (1-d) or their element (0-d), dtypes Object{cls "numpy.dtype", args descr}. */
void add_numpy_rules(Globals& g);

/** numpy.dtype(kind_size, False, True): the call alone ("f4", "O8"), its state still to BUILD. */
void write_numpy_dtype_call(Pickler& p, const std::string& kind_size);

/** The BUILD of a dtype's state (3, byteorder, None, None, None, -1, -1, flags), as numpy pickles it. */
void write_numpy_dtype_state(Pickler& p, const std::string& byteorder, int64_t flags);

/** numpy.dtype(kind+size, False, True) with its BUILD state, as numpy pickles it; descr is the
 *  array-protocol string ("<f4"). Memoised by descr at protocol 4+ (numpy's dtypes are singletons). */
void write_numpy_dtype(Pickler& p, const std::string& descr);

/** numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b'): the empty array a BUILD fills. */
void write_numpy_reconstruct(Pickler& p);

/** An array's shape tuple. */
void write_numpy_shape(Pickler& p, const Shape& shape);

/** A tensor as numpy 1.x pickles an array: _reconstruct(ndarray, (0,), b'b') + BUILD
 *  (1, shape, dtype, False, raw bytes). descr: the array-protocol string of t's dtype. */
void write_numpy_array(Pickler& p, const Tensor& t, const std::string& descr);

}  // namespace tb::pickle
