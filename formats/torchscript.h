// TorchScript archives (torch.jit.save, .pt): read only; nothing in them is ever run.
//
// Layout (a zip like torch.save's; every record under one folder, the saved file's stem):
//  1. `<folder>/data.pkl`: the module tree, a protocol-2 pickle. Each module is NEWOBJ of a compiled
//     class `__torch__.<qualname>` (torch's own layers appear as `__torch__.torch.nn.modules.linear.Linear`,
//     renamed copies with a `___torch_mangle_<n>` component), then BUILD with a dict of its attributes in
//     slot order: parameters, buffers, plain attributes (`training`, ...), submodules. Tensors are
//     torch._utils._rebuild_tensor_v2 over persistent-id storages, exactly as torch.save writes them;
//     typed containers are wrapped in torch.jit._pickle.build_intlist / restore_type_tag (identity).
//  2. `<folder>/data/<key>`: the storages of data.pkl.
//  3. `<folder>/constants.pkl`: a tuple of the tensor constants the code uses (`CONSTANTS.c<i>` is item i),
//     with its storages in `<folder>/constants/<key>`.
//  4. `<folder>/code/<module path>.py` (+ `.debug_pkl`): the TorchScript source of each class. Read here as
//     TEXT only, for two declaration lines per class: `__parameters__ = ["weight", ...]` and
//     `__buffers__ = [...]` (which attributes state_dict() lists). Never executed, never required.
//  5. `<folder>/version` (or `.data/version`), optional `byteorder`, `extra/` files, `bytecode.pkl` (mobile).
//
// The checkpoint: root = `torch.jit.load(f).state_dict()` (dotted names, parameters then buffers then
// submodules per module, tied tensors sharing one storage), then tensor attributes that are neither
// parameter nor buffer at their dotted path (`plain`, `tl.0`), then the constants as `constants.c<i>`.
// Without code/ every tensor attribute of a module counts as state, in slot order. The module tree
// (pt_module_tree(), classes named `__torch__.MLP`, mangle components dropped) is shaped like a
// torch.save(model) pickle: _parameters, _buffers, _modules and the other attributes.
#pragma once

#include "formats/format.h"

namespace tb {

/** Loads a TorchScript archive. Info: container, archive, version, byteorder, pickle protocol, whole
 *  module, code classes, state tensors, outside state_dict, constants, storages, storage bytes. */
Checkpoint load_torchscript(const Source& src, const LoadOptions& opts = {});

/** Whether src is a zip whose data.pkl builds `__torch__` classes or that has code/ or constants.pkl
 *  beside data.pkl. Cheap for torch.save archives (their first member is data.pkl). Never throws. */
bool sniff_torchscript(const Source& src);

}  // namespace tb
