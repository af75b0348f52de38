// One accessor per format adapter; each is defined in the format's own .cpp file (or its
// no_<dep>.cpp stub when the optional dependency is off). registry.cpp lists them in sniff order.
#pragma once

#include "formats/format.h"

namespace tb {
const FormatAdapter& torchscript_format();  // formats/torchscript.cpp
const FormatAdapter& pt_format();           // formats/pt.cpp
const FormatAdapter& npy_format();          // formats/npy.cpp
const FormatAdapter& npz_format();          // formats/npz.cpp
const FormatAdapter& safetensors_format();  // formats/safetensors.cpp
const FormatAdapter& h5_format();           // formats/h5.cpp | formats/no_hdf5.cpp
const FormatAdapter& keras_h5_format();     // formats/h5.cpp | formats/no_hdf5.cpp (write-only layout)
const FormatAdapter& keras3_h5_format();    // formats/h5.cpp | formats/no_hdf5.cpp (write-only layout)
const FormatAdapter& onnx_format();         // formats/onnx.cpp | formats/no_onnx.cpp
const FormatAdapter& onnx_tensor_format();  // formats/onnx_tensor_pb.cpp | formats/no_onnx.cpp
const FormatAdapter& oneflow_format();      // formats/oneflow.cpp
const FormatAdapter& keras_archive_format();  // formats/keras_archive.cpp | formats/no_hdf5.cpp
const FormatAdapter& gguf_format();         // formats/gguf.cpp
const FormatAdapter& tf_checkpoint_format();  // formats/tf_checkpoint.cpp | formats/no_tf_checkpoint.cpp
}  // namespace tb
