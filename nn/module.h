// nn modules (issue 9). Placeholder header so the layer exists.
#pragma once

#include "compute/backend.h"
#include "tensor/state_dict.h"

namespace tb::nn {
/** Version string of the nn layer. */
const char* version();
}  // namespace tb::nn
