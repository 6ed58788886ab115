// The Python extension module deephash_ext._C. Loading it runs the static registrars of the
// kernels (TORCH_LIBRARY / TORCH_LIBRARY_IMPL); the functions here only report how it was built.
#include <pybind11/pybind11.h>

#include <string>

namespace {

bool cuda_compiled() {
#ifdef DEEPHASH_WITH_CUDA
  return true;
#else
  return false;
#endif
}

// Whether at::parallel_for's OpenMP pragmas were compiled in: without them every CPU kernel
// runs on one thread, whatever torch.set_num_threads says.
bool openmp_compiled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

// The widest popcount/vector level the CPU kernels were compiled for (-march decides).
std::string simd_level() {
#if defined(__AVX512VPOPCNTDQ__)
  return "avx512-vpopcntdq";
#elif defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__)
  return "avx2";
#elif defined(__POPCNT__)
  return "popcnt";
#elif defined(__ARM_NEON)
  return "neon";
#else
  return "scalar";
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "deephash_ext kernels; importing this module registers torch.ops.deephash_ext.*";
  m.def("cuda_compiled", &cuda_compiled, "True if the CUDA kernels were compiled into this build.");
  m.def("openmp_compiled", &openmp_compiled, "True if the CPU kernels share work over torch's OpenMP threads.");
  m.def("simd_level", &simd_level, "Instruction-set level the CPU kernels were compiled for.");
}
