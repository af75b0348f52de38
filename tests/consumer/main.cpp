// A program outside the project that uses the installed headers and libraries.
#include <formats/registry.h>
#include <tensor/tensor.h>

#include <iostream>

int main() {
  tb::Tensor t = tb::Tensor::from_vector<float>(tb::DType::F32, {2, 2}, {1, 2, 3, 4});
  tb::Tensor h = t.transpose(0, 1).to(tb::DType::F16).to(tb::DType::F32);
  if (h.item_as_double(1) != 3.0) return 1;
  std::cout << "formats: " << tb::all_formats().size() << "\nconsumer ok\n";
  return 0;
}
