#include "nn/module.h"

namespace tb::nn {
const char* version() { return "0.1.0"; }
}  // namespace tb::nn
