// torch's rules for pickles (torch.save, torch.jit.save): tensors rebuilt over the storages the
// caller's persistent_load returns, torch.Size, torch.device, dtypes, storage classes, Parameters,
// and torch.nn module instances kept as objects with their state. Nothing of torch is run.
#pragma once

#include "formats/detail/pickle_rules.h"

namespace tb::pickle {

/** torch._utils._rebuild_tensor(_v2/_v3), _rebuild_parameter(_with_state), _rebuild_from_type(_v2)
 *  -> Tensor views (offset/stride in elements) over the storage tensor (None storage: None);
 *  torch.Size -> Tuple; torch.device -> Str; torch.<dtype> -> class reference (used by _v3);
 *  torch.<X>Storage -> class reference; torch.nn.modules.* -> Object {cls, args, state}. */
void add_torch_rules(Globals& g);

/** TorchScript pickles (torch.jit.save): `__torch__.*` classes as Objects {cls, state} and
 *  torch.jit._pickle's typed-container markers (build_intlist, restore_type_tag, ...), which give
 *  their first argument. */
void add_torchscript_rules(Globals& g);

}  // namespace tb::pickle
