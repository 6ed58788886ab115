// Backend-independent ops, registered as CompositeImplicitAutograd: they decompose into other
// deephash_ext ops before autograd and backend dispatch, so they need no kernels or formulas of
// their own.
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <string_view>
#include <tuple>

namespace deephash {
namespace {

// y of _spectral_filter_forward, which saves its eigendecomposition (and Uᵀ x) for its own backward.
at::Tensor spectral_filter(const at::Tensor& x, const at::Tensor& L, const at::Tensor& theta, c10::string_view basis) {
  static const auto forward =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("deephash_ext::_spectral_filter_forward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                 const at::Tensor&, c10::string_view)>();
  return std::get<0>(forward.call(x, L, theta, basis));
}

}  // namespace

TORCH_LIBRARY_IMPL(deephash_ext, CompositeImplicitAutograd, m) { m.impl("spectral_filter", &spectral_filter); }

}  // namespace deephash
