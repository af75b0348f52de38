// OneFlow checkpoints: the flow.save directory format, nn.Graph variable folders, legacy lazy-mode
// snapshots and the flow.save single-file pickle.
//
// Layouts (all little-endian, C order; OneFlow writes tensor.numpy().tobytes() on a little-endian host):
//  1. Variable folder: `<dir>/meta` + `<dir>/out`.
//       meta  protobuf TEXT format of VariableMetaInfo, e.g.
//               shape {
//                 dim: 3
//                 dim: 4
//               }
//               data_type: kFloat
//             (DataType enum names kFloat, kDouble, kFloat16, kBFloat16, kInt8, kChar, kInt16, kInt32,
//              kInt64, kUInt8, kUInt16, kUInt32, kUInt64, kBool, kComplex64, kComplex128; a number is read
//              with the OneFlow >= 0.8 enum values). No `shape` block means a 0-d tensor.
//       out   exactly numel * itemsize raw bytes (checked against the file size, read zero-copy).
//  2. flow.save(obj, dir, save_as_external_data=True) (the default before OneFlow 0.9.1):
//       <dir>/pickled_data   pickle (protocol 4) of {"protocol_version": 1, "data": obj}; every tensor is
//                            NEWOBJ of oneflow.nn.Parameter / oneflow.Tensor + BUILD {"path": "tensor_<N>"}
//       <dir>/tensor_<N>/    a variable folder (1.) per tensor (`global_tensor_<id>` for global tensors)
//     Whole modules (flow.save(model)) pickle the module object (oneflow.nn.modules.*) whose `_parameters`,
//     `_buffers` and `_modules` hold the tensors; they load as the module's state dict.
//  3. Legacy snapshot (lazy mode, also `flow.load` of a folder without pickled_data):
//       <dir>/snapshot_done  empty marker;  <dir>/<variable name>/  a variable folder (1.) per variable.
//     A SavedModel folder holding `variables/snapshot_done` loads its variables. nn.Graph saves the same
//     per-variable folders (`model.a/`) beside a job file, without the marker.
//  4. flow.save(obj, file) single file: one pickle of {"protocol_version": 1, "oneflow" | "__oneflow__": None,
//     "data": obj}; tensors are NEWOBJ of the tensor class + BUILD {"data": numpy array, "dtype":
//     oneflow dtype (pickled as its DataType number), "device": "cpu"}.
//
// Nothing from a file is ever executed: the pickles run in the shared pickle VM (formats/detail/pickle.h).
// Globals outside OneFlow's own classes, collections.OrderedDict and numpy arrays are refused unless
// LoadOptions::allow_unknown_globals.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "formats/format.h"

namespace tb {

/** Shape and dtype of one OneFlow variable (VariableMetaInfo). */
struct OneflowMeta {
  DType dtype = DType::F32;
  Shape shape;
};

/** Parses a `meta` text proto; label names the file in errors. Unknown fields are skipped (bounded). */
OneflowMeta parse_oneflow_meta(std::string_view text, const std::string& label);
/** The meta text OneFlow writes (text_format.MessageToString of VariableMetaInfo). */
std::string oneflow_meta_text(const OneflowMeta& meta);
/** DataType enum name ("kFloat"); throws UnsupportedError for dtypes OneFlow cannot store. */
std::string_view oneflow_dtype_name(DType t);
/** DataType enum name (or number, OneFlow >= 0.8 values) to DType; nullopt when unknown/unsupported. */
std::optional<DType> dtype_from_oneflow(std::string_view name_or_number);

/** Reads a variable folder (`meta` + `out`); the tensor views the mapped `out` when mmap is set. */
Tensor load_oneflow_variable(const std::filesystem::path& dir, bool mmap = true);

/** Loads any OneFlow layout above: a folder (src.reader null) or a single-file pickle. */
Checkpoint load_oneflow(const Source& src, const LoadOptions& opts = {});

/** The OneFlow writer's options (--option KEY=VALUE). */
struct OneflowWriteOptions : WriteOptions {
  std::string layout = "pickle";      // pickle (flow.save folder), single (flow.save file) or snapshot (legacy)
  std::string magic = "__oneflow__";  // single: the pickle's magic key, __oneflow__ (OneFlow >= 0.9) or oneflow
  std::string tensor_class = "auto";  // auto (Parameter for floating/complex tensors), parameter or tensor
  uint64_t first_tensor = 0;          // N of the first tensor_N folder (OneFlow counts process-wide)
};

/** Writes the flow.save directory format (2.): `pickled_data` + `tensor_<N>/{meta,out}`, the bytes CPython's
 *  pickle (protocol 4) writes for the same objects; a flat name -> tensor dict is written as the OrderedDict
 *  (with `_metadata`) that Module.state_dict() returns. Checkpoint::metadata has no place and is dropped.
 *  Options: "layout" = "pickle" (default), "single" (4.: one pickle FILE with numpy 1.x arrays, magic key
 *  from option "magic": "__oneflow__" default or "oneflow"; no bfloat16/float8) or "snapshot" (3.: one folder
 *  per flat key + snapshot_done); "first_tensor" (N of the first tensor folder, default 0; OneFlow numbers
 *  them from a process-wide counter); "tensor_class" ("auto": oneflow.nn.Parameter for floating/complex
 *  tensors, oneflow.Tensor otherwise; "parameter"; "tensor"). Folders are built in a hidden temporary
 *  folder beside the target and renamed into place (exchanged atomically with an existing target, which is
 *  then removed); an existing target is replaced only with overwrite, a folder only when it is empty or a
 *  OneFlow folder. Opaque objects (ValueObject) and complex scalars are refused. */
void write_oneflow(const Checkpoint& ckpt, const std::filesystem::path& dir, const OneflowWriteOptions& opts);
/** write_oneflow with SaveOptions::options parsed as OneflowWriteOptions (keys layout, magic, tensor_class,
 *  first_tensor). */
void save_oneflow(const Checkpoint& ckpt, const std::filesystem::path& dir, const SaveOptions& opts = {});

/** True when path is a folder in one of the OneFlow layouts (cheap; never throws). */
bool is_oneflow_folder(const std::filesystem::path& path);

}  // namespace tb
