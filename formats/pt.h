// PyTorch torch.save files (.pt .pth .bin .params .ckpt .tar): zip (torch >= 1.6) and legacy streams.
//
// Zip container (detected by `PK\3\4` and a `<folder>/data.pkl` entry):
//  1. Every record lives under one folder, taken from the FIRST entry's name (torch writes the saved
//     file's stem, e.g. `mlp/`; buffers give `archive/`).
//  2. `<folder>/data.pkl`: the pickled object (protocol 2 by default). Tensors are REDUCEs of
//     torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks) (v3 adds a
//     dtype for new dtypes); `storage` is BINPERSID of ('storage', torch.<T>Storage, key, location, numel).
//     Offsets and strides are in ELEMENTS; several tensors may view one storage.
//  3. `<folder>/data/<key>`: the raw bytes of storage <key> (numel * element size), stored
//     uncompressed, data 64-byte aligned through an `FB` local extra field.
//  4. `<folder>/version` ("3\n"; or `.data/version`), `byteorder` ("little"/"big", 2.x),
//     `.format_version`, `.storage_alignment`, `.data/serialization_id` (2.x). Local headers carry zero
//     sizes + data descriptors; the writer uses ZIP64.
// Legacy stream (torch < 1.6 or _use_new_zipfile_serialization=False), detected by its magic pickle:
//  1. pickle of the magic number 0x1950a86a20f9469cfc6c (15 bytes 80 02 8a 0a 6c fc 9c 46 f9 20 6a a8 50 19 2e)
//  2. pickle of the protocol version (1001), 3. pickle of sys_info {protocol_version, little_endian, type_sizes}
//  4. the object pickle; persistent ids ('storage', type, root_key, location, numel, view_metadata)
//  5. pickle of the sorted list of storage keys
//  6. per key in that order: int64 LE element count, then count * element size bytes (little-endian).
//
// Loading never runs code (see formats/detail/pickle.h). Storages are loaded once and shared by all
// their views; stored zip records of a memory-mapped file are zero-copy. Whole-module pickles
// (torch.save(model)) become the module's state_dict (same keys as model.state_dict()); the module
// tree stays reachable through pt_module_tree().
#pragma once

#include <filesystem>

#include "formats/format.h"

namespace tb {

/** Loads a torch.save file (zip or legacy). Info: container, archive, version, byteorder, pickle
 *  protocol, storages, storage bytes, tensor bytes. `_metadata` of state dicts goes to metadata as
 *  "_metadata.<module prefix>.version" (nested dicts prefixed by their path). */
Checkpoint load_pt(const Source& src, const LoadOptions& opts = {});

/** The .pt writer's options (--option KEY=VALUE). */
struct PtWriteOptions : WriteOptions {
  bool trim_storage = false;  // write only the byte range each storage's views use (torch.save: whole storages)
};

/** Writes the zip format torch 1.13 / 2.x read with weights_only=True: archive folder = file stem,
 *  64-byte aligned records, `version` "3\n" and `byteorder` "little", protocol-2 pickle of the Value
 *  tree (a top-level dict from a non-pt checkpoint becomes an OrderedDict). Views that share a
 *  storage share it in the file. */
void write_pt(const Checkpoint& ckpt, const std::filesystem::path& path, const PtWriteOptions& opts);
/** write_pt with SaveOptions::options parsed as PtWriteOptions (key "trim_storage" = 0 or 1). */
void save_pt(const Checkpoint& ckpt, const std::filesystem::path& path, const SaveOptions& opts = {});

/** For a whole-module pickle: the module object (Value::object, cls "torch.nn.modules.linear.Linear"
 *  or the user's class, state = its __dict__ with _parameters, _buffers, _modules and the
 *  hyper-parameters such as in_features, kernel_size, stride). None for other files. */
Value pt_module_tree(const Checkpoint& ckpt);

/** Whether v looks like a pickled nn.Module (an object whose state has _modules and _parameters). */
bool pt_is_module(const Value& v);

/** model.state_dict() of a pickled module: parameters, then persistent buffers, then children, with
 *  dotted prefixes ("0.weight", "hidden.bias"); None entries skipped. */
Value pt_module_state_dict(const Value& module);

}  // namespace tb
