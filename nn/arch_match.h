// Loading a state dict into an architecture by structure: the layers of the file are matched to the
// architecture's layers by order and shape, whatever they are called ("hidden/output", "0/2" of a
// Sequential, "fc1/fc2", "layers.0/layers.2", a "net." prefix), and the mapping used is reported.
//
// A layer is a dotted prefix that owns tensors directly ("hidden" owns hidden.weight, hidden.bias);
// a layer's tensors are matched by their own names (weight, bias, running_mean, ...) or, when these
// differ, by position; shapes must be equal. Buffers follow their layer; a BatchNorm layer without
// num_batches_tracked (torch < 0.4.1) keeps the model's 0. Orders tried, first fit wins:
//   1. the file's order (insertion order of the state dict), the primary signal;
//   2. the layer names in natural order ("2" before "10"); tried first when the file's keys are in
//      byte order, as writers that sort keys leave them (safetensors: "l.0", "l.10", "l.2");
//   3. any order the shapes allow, when exactly one does.
// Refused (KeyError, or ShapeError when the layers pair up but a shape differs) with both sides and
// the candidates listed: a different number of layers or tensors, no order that fits, or several
// orders that fit when the file's own does not.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"
#include "tensor/state_dict.h"

namespace tb::nn {

/** How one layer of the file maps onto one layer of the architecture. */
struct LayerMatch {
  std::string source, target, type;                       // "output", "out", "Linear"
  std::vector<std::pair<std::string, std::string>> keys;  // ("output.weight", "out.weight"), ...
};

/** The mapping a structural load used. */
struct ArchMapping {
  std::vector<LayerMatch> layers;
  /** "names" (every key already had the architecture's name), "file order", "natural name order"
   *  (with "; the file's keys are sorted" when a writer sorted them) or "shapes (the only order that fits)". */
  std::string order;
  /** Whether any key was renamed. */
  bool renamed() const;
  /** One line per layer: "output.{weight,bias} -> out.{weight,bias} (Linear)"; "" when nothing was renamed. */
  std::string describe() const;
};

/** Options for loading into an architecture. */
struct ArchOptions {
  /** Load by exact names only (Module::load_state_dict strict), as before structural matching. */
  bool strict_names = false;
};

/** Finds the mapping from sd's keys to model's state_dict keys (see the file comment); throws when
 *  there is none or it is ambiguous. Changes nothing. */
ArchMapping match_structure(Module& model, const StateDict& sd);

/** sd with its keys renamed by mapping (tensors shared, metadata kept). */
StateDict apply_mapping(const StateDict& sd, const ArchMapping& mapping);

/** Loads sd into model by structure (or by names when opts.strict_names) and returns the mapping. */
ArchMapping load_by_structure(Module& model, const StateDict& sd, const ArchOptions& opts = {});

/** A model from an --arch spec (nn/arch_spec.h) and the mapping its weights were loaded with. */
struct BuiltArch {
  Module::Ptr model;
  ArchMapping mapping;
};

/** One call: builtin_model(spec), then load_by_structure(model, sd, opts). */
BuiltArch build_arch(const std::string& spec, const StateDict& sd, const ArchOptions& opts = {});

}  // namespace tb::nn
