// Compute backends (issue 8). Placeholder header so the layer exists.
#pragma once

#include <string>
#include <vector>

namespace tb::compute {
/** Names of the backends this build can create. */
std::vector<std::string> available_backends();
}  // namespace tb::compute
