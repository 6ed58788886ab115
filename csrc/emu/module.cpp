// The Python extension module deephash_ext._emu: the CUDA kernels of csrc/cuda compiled as C++ and
// run by the emulated runtime on the "emu" device (csrc/emu). Loading it registers the kernels under
// PrivateUse1; the functions here are the emulation's controls and facts, never ops.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <string>
#include <tuple>

#include "emu/runtime.h"

namespace {

namespace emu = deephash_emu;

std::map<std::string, std::tuple<int64_t, int64_t, int64_t, int64_t>> launched_kernels() {
  std::map<std::string, std::tuple<int64_t, int64_t, int64_t, int64_t>> out;
  for (const auto& [name, s] : emu::kernel_stats()) out[name] = {s.launches, s.blocks, s.threads, s.barriers};
  return out;
}

void set_schedule(const std::string& kind, uint64_t seed) {
  if (kind == "forward") {
    emu::set_schedule(emu::Schedule::kForward, seed);
  } else if (kind == "reverse") {
    emu::set_schedule(emu::Schedule::kReverse, seed);
  } else if (kind == "shuffle") {
    emu::set_schedule(emu::Schedule::kShuffle, seed);
  } else {
    throw pybind11::value_error("schedule must be 'forward', 'reverse' or 'shuffle', got '" + kind + "'");
  }
}

std::tuple<std::string, uint64_t> get_schedule() {
  static const char* names[] = {"forward", "reverse", "shuffle"};
  return {names[static_cast<int>(emu::schedule())], emu::schedule_seed()};
}

}  // namespace

PYBIND11_MODULE(_emu, m) {
  m.doc() = "The CUDA kernels of deephash_ext under a CPU emulation of the CUDA execution model (device 'emu')";
  m.def("launched_kernels", &launched_kernels,
        "{kernel name: (launches, blocks, threads, barriers)} since the last reset_launched_kernels().");
  m.def("reset_launched_kernels", &emu::reset_kernel_stats);
  m.def("set_schedule", &set_schedule, pybind11::arg("kind"), pybind11::arg("seed") = 0,
        "Order of a block's threads between barriers: 'forward', 'reverse' or 'shuffle' (seeded).");
  m.def("get_schedule", &get_schedule);
  m.def("set_poison", &emu::set_poison, "The byte that fills shared memory at the start of every block.");
  m.def("get_poison", &emu::poison);
  m.def("set_device_smem_optin", &emu::set_device_smem_optin,
        "cudaDevAttrMaxSharedMemoryPerBlockOptin of the emulated device (default 232448, as sm_90).");
  m.def("get_device_smem_optin", &emu::device_smem_optin);
}
