#include "compute/backend.h"

namespace tb::compute {
std::vector<std::string> available_backends() { return {"cpu"}; }
}  // namespace tb::compute
