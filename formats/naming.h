// The naming rule: one reversible mapping between a tensor name (any byte string, usually UTF-8)
// and the name a format stores for it. Writers call encode_name (or stored_names), readers call
// decode_name, so A -> B -> A keeps every name bit for bit. Full description: docs/NAMING.md.
//
// Escapes are "%XX" (two upper-case hex digits of one byte). Each target escapes only what it cannot
// hold; '%' itself is escaped in every target, so an escaped name never reads as another one:
//   Hdf5 (dataset paths), Npz (member paths before ".npy"): '/' separates groups / folders; a '/'
//     that would make an empty component (leading, trailing, doubled) is escaped "%2F"; a component
//     "." or ".." starts with "%2E"; control bytes 00-1F and 7F are escaped; Npz also escapes '\'.
//     No stored path can leave the folder it is extracted into.
//   Folder (one folder per tensor: OneFlow snapshots): one component, every '/' and '\' escaped,
//     the rest as Npz; the reserved name "snapshot_done" starts with "%73".
//   Onnx (initializer / value names), Safetensors (header keys): only '%'; the reserved safetensors
//     key "__metadata__" starts with "%5F".
//   Every target: the empty name is stored as "%_" (a lone '%' is never produced otherwise).
// Decoding undoes exactly the escapes the target can produce; any other text ("50%", "%41" in an
// Hdf5 name) is kept as it is, so names written by other tools read back unchanged.
//
// A file holding one unnamed tensor (np.save, torch.save(tensor)) stores it as kUnnamedTensor
// ("arr_0", numpy's own name for np.savez(x)); same_tensor_names() lets `diff` and `roundtrip`
// treat that name and the empty name as the same tensor.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tensor/state_dict.h"

namespace tb::naming {

/** What kind of name a format stores. */
enum class Target { Hdf5, Npz, Folder, Onnx, Safetensors };

/** The name a lone unnamed tensor gets in every format. */
inline constexpr std::string_view kUnnamedTensor = "arr_0";

/** The stored form of a tensor name in target (injective; never empty). */
std::string encode_name(std::string_view name, Target target);

/** As encode_name, but the whole name is one component (every '/' escaped): a Keras layer group. */
std::string encode_component(std::string_view name, Target target);

/** The tensor name a stored name stands for: the inverse of encode_name on its outputs. */
std::string decode_name(std::string_view stored, Target target);

/** Stored names of every tensor of sd, in order: encode_name, except that a dict holding exactly
 *  one tensor named "" stores it as kUnnamedTensor. */
std::vector<std::string> stored_names(const StateDict& sd, Target target);

/** sd with its lone unnamed tensor (one tensor, named "") renamed to kUnnamedTensor; otherwise sd.
 *  Used to compare a bare array with the same tensor in a named format. */
StateDict with_unnamed_tensor_named(const StateDict& sd);

}  // namespace tb::naming
