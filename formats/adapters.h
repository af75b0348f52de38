// One accessor per format adapter; each is defined in the format's own .cpp file (or its
// no_<dep>.cpp stub when the optional dependency is off). registry.cpp lists them in sniff order.
// with_writer() attaches a writer and its typed options table to an adapter written as a designated
// initializer, so a format's registration is its facts and nothing else.
#pragma once

#include <memory>

#include "formats/format.h"
#include "formats/typed_options.h"

namespace tb {
const FormatAdapter& torchscript_format();    // formats/torchscript.cpp
const FormatAdapter& pt_format();             // formats/pt.cpp
const FormatAdapter& npy_format();            // formats/npy.cpp
const FormatAdapter& npz_format();            // formats/npz.cpp
const FormatAdapter& safetensors_format();    // formats/safetensors.cpp
const FormatAdapter& h5_format();             // formats/h5.cpp | formats/no_hdf5.cpp
const FormatAdapter& keras_h5_format();       // formats/h5.cpp | formats/no_hdf5.cpp (write-only layout)
const FormatAdapter& keras3_h5_format();      // formats/h5.cpp | formats/no_hdf5.cpp (write-only layout)
const FormatAdapter& onnx_format();           // formats/onnx_write.cpp | formats/no_onnx.cpp
const FormatAdapter& onnx_tensor_format();    // formats/onnx_tensor_pb.cpp | formats/no_onnx.cpp
const FormatAdapter& oneflow_format();        // formats/oneflow.cpp
const FormatAdapter& keras_archive_format();  // formats/keras_archive.cpp | formats/no_hdf5.cpp
const FormatAdapter& gguf_format();           // formats/gguf.cpp
const FormatAdapter& tf_checkpoint_format();  // formats/tf_checkpoint.cpp | formats/no_tf_checkpoint.cpp

/** f with save_options and check_options taken from table; the table, for the writer to parse with. */
template <class T>
std::shared_ptr<const OptionTable<T>> attach_options(FormatAdapter& f, OptionTable<T> table) {
  auto t = std::make_shared<const OptionTable<T>>(std::move(table));
  f.save_options = option_list(*t);
  f.check_options = [t, name = f.name](const SaveOptions& o, const std::filesystem::path& p) {
    (void)parse_options(*t, name, p, o);
  };
  return t;
}

/** The adapter f with a writer that takes its options typed: save() parses SaveOptions through table
 *  once (an unknown key or bad value is an UnsupportedError naming the accepted ones) and calls write. */
template <class T>
FormatAdapter with_writer(FormatAdapter f, OptionTable<T> table,
                          void (*write)(const Checkpoint&, const std::filesystem::path&, const T&)) {
  f.save = [t = attach_options(f, std::move(table)), name = f.name, write](
               const Checkpoint& c, const std::filesystem::path& p, const SaveOptions& o) {
    write(c, p, parse_options(*t, name, p, o));
  };
  return f;
}

}  // namespace tb
