// Calls hatch::patch_overlap from C++ through the dispatcher, on the analytic case of a fronto-parallel
// plane seen by two cameras 4 px apart: with 4-px-wide cells, every cell of view 0 but the first column
// maps wholly to the cell on its left in view 1. Exits non-zero if the op gives anything else.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <iostream>

int main() {
  const int64_t H = 12, W = 16;
  const double f = 20.0, Z = 2.0;
  at::Tensor depth = at::full({1, 2, H, W}, Z, at::kDouble);
  at::Tensor K = at::tensor({f, 0.0, (W - 1) / 2.0, 0.0, f, (H - 1) / 2.0, 0.0, 0.0, 1.0}, at::kDouble)
                     .reshape({1, 1, 3, 3})
                     .expand({1, 2, 3, 3})
                     .contiguous();
  at::Tensor T = at::eye(4, at::kDouble).reshape({1, 1, 4, 4}).repeat({1, 2, 1, 1});
  T.index_put_({0, 1, 0, 3}, 4.0 * Z / f);  // camera 1: 4 px to the right at the plane's depth

  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("hatch::patch_overlap", "")
                .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                  int64_t, double, double, int64_t)>();
  at::Tensor M = op.call(depth, K, T, 3, 4, 0.05, 0.05, 1);  // [1, 2, 2, 12, 12]

  at::Tensor expected = at::zeros({12, 12}, at::kDouble);
  for (int64_t row = 0; row < 3; ++row)
    for (int64_t col = 1; col < 4; ++col) expected.index_put_({row * 4 + col, row * 4 + col - 1}, 1.0);
  const bool ok = at::allclose(M[0][0][1], expected) && at::allclose(M[0][1][0], expected.t());
  std::cout << "hatch::patch_overlap from C++: M[0,0,1] =\n" << M[0][0][1] << "\n"
            << (ok ? "OK" : "MISMATCH") << std::endl;
  return ok ? 0 : 1;
}
