// The emulated CUDA runtime: fibers, the block scheduler, warp collectives, guarded shared and
// device memory, and the checks of csrc/emu/cuda_emu.h. No torch here: errors are
// std::runtime_error, which torch's op bindings turn into RuntimeError.
//
// Memory errors. Every shared array, the dynamic shared buffer and every emu allocation ends at a
// PROT_NONE page; the bytes between the end of the data and that page (the rounding to 16 bytes)
// hold a canary. An access past the end faults on the guard page: a SIGSEGV handler, installed only
// while a launch runs, jumps back to the scheduler (siglongjmp out of the faulting fiber, which is
// abandoned) and the launch fails naming the kernel, block, thread and the array. A write into the
// slack changes the canary, checked when the block (shared) or the launch (device memory) ends.
// Accesses before the start are not caught.
#include "emu/runtime.h"

#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

// Context switches between fibers. On x86-64 a dozen instructions (callee-saved registers, the
// stack pointer, MXCSR and the x87 control word): swapcontext would also save the signal mask, a
// system call per switch, and a block of 1024 threads switches tens of thousands of times.
#if defined(__x86_64__)
extern "C" void deephash_emu_switch(void** save_sp, void* new_sp);
asm(R"(
  .text
  .p2align 4
  .globl deephash_emu_switch
  .hidden deephash_emu_switch
  .type deephash_emu_switch, @function
deephash_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size deephash_emu_switch, .-deephash_emu_switch
)");
#endif

namespace deephash_emu {

thread_local Coords* tls_coords = nullptr;

namespace {

struct Context {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

void context_switch(Context& from, Context& to) {
#if defined(__x86_64__)
  deephash_emu_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

// A context that starts `entry` on the stack [stack, stack + bytes).
void context_init(Context& c, char* stack, size_t bytes, void (*entry)()) {
#if defined(__x86_64__)
  auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
  auto* slot = reinterpret_cast<uint64_t*>(top);
  *--slot = 0;                                   // entry's return address: it never returns
  *--slot = reinterpret_cast<uint64_t>(entry);   // popped by the switch's ret
  for (int i = 0; i < 6; ++i) *--slot = 0;       // rbp, rbx, r12-r15
  uint32_t mxcsr;
  uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  *--slot = static_cast<uint64_t>(mxcsr) | static_cast<uint64_t>(fpucw) << 32;
  c.sp = slot;
#else
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
#endif
}

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kDefaultSmem = 48 * 1024;  // dynamic shared memory a launch may use without opting in
constexpr unsigned char kCanary = 0xCD;

size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}
size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

// --- guarded regions ---
struct Region {
  char* map = nullptr;
  size_t map_len = 0;
  char* data = nullptr;  // data + size + slack == guard page
  size_t size = 0;
  std::string what;  // for messages: "shared array 'red'", "an emu allocation"
  uint64_t epoch = 0;
  char* guard() const { return map + map_len - page_size(); }
  size_t slack() const { return static_cast<size_t>(guard() - data) - size; }
};

std::mutex g_regions_mutex;
std::map<uintptr_t, Region*> g_regions;  // by guard page address: all live regions
std::map<void*, Region*> g_device;       // emu allocations by data pointer

Region* region_new(size_t size, size_t align, std::string what) {
  const size_t a = align > 16 ? align : 16;
  const size_t body = round_up(size, a);
  auto* r = new Region;
  r->map_len = round_up(body, page_size()) + page_size();
  void* m = mmap(nullptr, r->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    delete r;
    throw std::bad_alloc();
  }
  r->map = static_cast<char*>(m);
  mprotect(r->guard(), page_size(), PROT_NONE);
  r->data = r->guard() - body;
  r->size = size;
  r->what = std::move(what);
  std::memset(r->data + size, kCanary, r->slack());
  std::lock_guard<std::mutex> lock(g_regions_mutex);
  g_regions[reinterpret_cast<uintptr_t>(r->guard())] = r;
  return r;
}

void region_delete(Region* r) {
  {
    std::lock_guard<std::mutex> lock(g_regions_mutex);
    g_regions.erase(reinterpret_cast<uintptr_t>(r->guard()));
  }
  munmap(r->map, r->map_len);
  delete r;
}

bool canary_intact(const Region* r) {
  const char* p = r->data + r->size;
  for (size_t i = 0; i < r->slack(); ++i)
    if (static_cast<unsigned char>(p[i]) != kCanary) return false;
  return true;
}

// --- settings and statistics ---
struct Settings {
  Schedule schedule = Schedule::kForward;
  uint64_t seed = 0;
  uint8_t poison = 0xFF;  // NaN in every float width, -1 in every integer width
  int smem_optin = 232448;  // sm_90 (H100, H200)
};
Settings g_settings;
std::map<std::string, KernelStats> g_stats;
std::map<const void*, int> g_max_dynamic_smem;  // cudaFuncAttributeMaxDynamicSharedMemorySize per kernel

// --- fibers and the block scheduler ---
enum class State { kReady, kBarrier, kWarp, kDone };

struct Thread {
  Coords coords;
  unsigned linear = 0, lane = 0, warp = 0;
  State state = State::kReady;
  Site site{nullptr, 0};
  WarpOp op = WarpOp::kSyncwarp;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  int src = 0;
  Context ctx;
};

// A warp collective some lanes of its mask have reached.
struct Pending {
  unsigned mask;
  WarpOp op;
  Site site;
  unsigned arrived;
};

struct Launch {
  const LaunchSpec* spec = nullptr;
  const std::function<void()>* body = nullptr;
  std::vector<Thread> threads;
  std::vector<std::vector<Pending>> pending;  // per warp
  Context sched;
  Thread* current = nullptr;
  bool failed = false;
  std::string error;
  uint64_t epoch = 0;
  std::vector<Region*> touched;  // static shared arrays of the current block
  size_t static_bytes = 0;
  int64_t barriers = 0;
};

Launch* g_launch = nullptr;
uint64_t g_epoch = 0;
std::vector<char*> g_stacks;  // kStackBytes each, a guard page below
Region* g_dynamic = nullptr;  // the dynamic shared buffer (grown as launches need)
std::recursive_mutex g_launch_mutex;

// Faults inside a fiber come back to the scheduler through this.
sigjmp_buf g_fault_jmp;
volatile sig_atomic_t g_in_fiber = 0;
void* volatile g_fault_addr = nullptr;
struct sigaction g_old_segv, g_old_bus;
char* g_altstack = nullptr;

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::kSyncwarp: return "__syncwarp";
    case WarpOp::kBallot: return "__ballot_sync";
    case WarpOp::kShfl: return "__shfl*_sync";
    case WarpOp::kMatchAny: return "__match_any_sync";
  }
  return "?";
}

std::string where(const Site& s) {
  std::ostringstream o;
  o << (s.file ? s.file : "?") << ":" << s.line;
  return o.str();
}

std::string dims(const dim3& d) {
  std::ostringstream o;
  o << "(" << d.x << ", " << d.y << ", " << d.z << ")";
  return o.str();
}

std::string prefix(const Launch& L, const Thread* t) {
  std::ostringstream o;
  o << "emulated CUDA: kernel " << L.spec->name << ", block " << dims(L.threads.front().coords.block_idx);
  if (t) o << ", thread " << dims(t->coords.thread_idx);
  o << ": ";
  return o.str();
}

std::string describe(const Thread& t) {
  std::ostringstream o;
  o << "thread " << dims(t.coords.thread_idx) << " ";
  switch (t.state) {
    case State::kDone: o << "has exited"; break;
    case State::kBarrier: o << "waits at __syncthreads at " << where(t.site); break;
    case State::kWarp: o << "waits at " << op_name(t.op) << " at " << where(t.site); break;
    case State::kReady: o << "is running"; break;
  }
  return o.str();
}

// Never returns: records the error and leaves the fiber for good.
[[noreturn]] void fail(const std::string& what) {
  Launch& L = *g_launch;
  L.failed = true;
  L.error = prefix(L, L.current) + what;
  g_in_fiber = 0;
  context_switch(L.current->ctx, L.sched);
  std::abort();  // unreachable: a failed fiber is never resumed
}

void yield(Thread* t) {
  Launch& L = *g_launch;
  g_in_fiber = 0;
  context_switch(t->ctx, L.sched);
  g_in_fiber = 1;
}

void fiber_main() {
  Launch& L = *g_launch;
  Thread* t = L.current;
  (*L.body)();
  t->state = State::kDone;
  g_in_fiber = 0;
  context_switch(t->ctx, L.sched);
  std::abort();  // unreachable
}

void on_fault(int sig, siginfo_t* info, void* ctx) {
  if (g_in_fiber) {
    g_in_fiber = 0;
    g_fault_addr = info->si_addr;
    siglongjmp(g_fault_jmp, 1);
  }
  // Not ours: hand the fault to whoever handled it before the launch.
  struct sigaction& old = sig == SIGSEGV ? g_old_segv : g_old_bus;
  sigaction(sig, &old, nullptr);
  (void)ctx;
}

std::string describe_address(void* addr) {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  std::ostringstream o;
  o << "invalid memory access at " << addr;
  std::lock_guard<std::mutex> lock(g_regions_mutex);
  const auto page = a / page_size() * page_size();
  auto it = g_regions.find(page);
  if (it != g_regions.end()) {
    const Region* r = it->second;
    o << ", " << (a - reinterpret_cast<uintptr_t>(r->data + r->size)) << " bytes past the end of " << r->what << " ("
      << r->size << " bytes)";
    return o.str();
  }
  for (char* s : g_stacks) {
    if (a >= reinterpret_cast<uintptr_t>(s) - page_size() && a < reinterpret_cast<uintptr_t>(s)) {
      o << ": the thread's stack overflowed (" << kStackBytes << " bytes)";
      return o.str();
    }
  }
  return o.str();
}

std::vector<unsigned> make_order(unsigned n, uint64_t block, uint64_t phase) {
  std::vector<unsigned> order(n);
  for (unsigned i = 0; i < n; ++i) order[i] = i;
  if (g_settings.schedule == Schedule::kReverse) {
    std::reverse(order.begin(), order.end());
  } else if (g_settings.schedule == Schedule::kShuffle) {
    std::mt19937_64 rng(g_settings.seed * 0x9E3779B97F4A7C15ull ^ (block * 0xBF58476D1CE4E5B9ull) ^ (phase + 1));
    std::shuffle(order.begin(), order.end(), rng);
  }
  return order;
}

void ensure_stacks(size_t n) {
  while (g_stacks.size() < n) {
    const size_t len = kStackBytes + page_size();
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    mprotect(m, page_size(), PROT_NONE);  // the stack grows down into this page
    g_stacks.push_back(static_cast<char*>(m) + page_size());
  }
}

void prepare_dynamic(size_t bytes) {
  if (!g_dynamic || g_dynamic->size != bytes) {
    if (g_dynamic) region_delete(g_dynamic);
    g_dynamic = region_new(bytes, 16, "the dynamic shared memory (extern __shared__)");
  }
}

void check_spec(const LaunchSpec& s, unsigned nthreads) {
  std::ostringstream o;
  o << "emulated CUDA: kernel " << s.name << ": ";
  auto bad = [&](const std::string& what) { throw std::runtime_error(o.str() + what); };
  if (s.grid.x == 0 || s.grid.y == 0 || s.grid.z == 0) bad("invalid configuration: grid " + dims(s.grid));
  if (s.grid.x > 0x7fffffffu || s.grid.y > 65535 || s.grid.z > 65535) bad("grid " + dims(s.grid) + " exceeds the limits");
  if (s.block.x == 0 || s.block.y == 0 || s.block.z == 0 || nthreads > 1024 || s.block.z > 64)
    bad("invalid block " + dims(s.block) + " (at most 1024 threads)");
  if (s.smem > kDefaultSmem) {
    auto it = g_max_dynamic_smem.find(s.fn);
    const int allowed = it == g_max_dynamic_smem.end() ? static_cast<int>(kDefaultSmem) : it->second;
    if (static_cast<size_t>(allowed) < s.smem)
      bad(std::to_string(s.smem) + " bytes of dynamic shared memory, over the " + std::to_string(allowed) +
          " allowed: above 48 KB a kernel must opt in with cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  }
  if (s.smem > static_cast<size_t>(g_settings.smem_optin))
    bad(std::to_string(s.smem) + " bytes of dynamic shared memory, over the device's " +
        std::to_string(g_settings.smem_optin));
}

void check_device_canaries(const LaunchSpec& s) {
  std::lock_guard<std::mutex> lock(g_regions_mutex);
  for (const auto& [ptr, r] : g_device) {
    if (!canary_intact(r)) {
      std::memset(r->data + r->size, kCanary, r->slack());  // reported once, not by every later launch
      throw std::runtime_error(std::string("emulated CUDA: kernel ") + s.name + " wrote past the end of " + r->what +
                               " (" + std::to_string(r->size) + " bytes)");
    }
  }
}

// Runs one block to its end; returns false (with L.error set) on a failure.
bool run_block(Launch& L, const dim3& bidx, uint64_t block_linear) {
  const LaunchSpec& s = *L.spec;
  const unsigned n = static_cast<unsigned>(L.threads.size());
  L.epoch = ++g_epoch;
  for (auto& p : L.pending) p.clear();
  L.touched.clear();
  L.static_bytes = 0;
  std::memset(g_dynamic->data, g_settings.poison, g_dynamic->size);
  std::memset(g_dynamic->data + g_dynamic->size, kCanary, g_dynamic->slack());
  for (unsigned i = 0; i < n; ++i) {
    Thread& t = L.threads[i];
    t.coords.block_idx = bidx;
    t.state = State::kReady;
    context_init(t.ctx, g_stacks[i], kStackBytes, fiber_main);
  }
  uint64_t phase = 0;
  std::vector<unsigned> order = make_order(n, block_linear, phase);
  if (sigsetjmp(g_fault_jmp, 1)) {
    L.failed = true;
    L.error = prefix(L, L.current) + describe_address(g_fault_addr);
    return false;
  }
  while (true) {
    bool any_ready = false;
    for (unsigned idx : order) {
      Thread& t = L.threads[idx];
      if (t.state != State::kReady) continue;
      L.current = &t;
      tls_coords = &t.coords;
      g_in_fiber = 1;
      context_switch(L.sched, t.ctx);
      g_in_fiber = 0;
      if (L.failed) return false;
    }
    for (const Thread& t : L.threads) any_ready |= t.state == State::kReady;
    if (any_ready) continue;
    unsigned done = 0;
    const Thread* at_warp = nullptr;
    const Thread* at_barrier = nullptr;
    const Thread* exited = nullptr;
    for (const Thread& t : L.threads) {
      if (t.state == State::kDone) {
        ++done;
        if (!exited) exited = &t;
      } else if (t.state == State::kWarp && !at_warp) {
        at_warp = &t;
      } else if (t.state == State::kBarrier && !at_barrier) {
        at_barrier = &t;
      }
    }
    L.current = nullptr;
    if (done == n) break;
    if (at_warp) {
      // Some lane of its mask never arrives: it waits at a barrier (the others are checked on arrival).
      std::ostringstream o;
      o << op_name(at_warp->op) << " at " << where(at_warp->site) << " with mask 0x" << std::hex << at_warp->mask
        << std::dec << " never completes: ";
      for (unsigned j = 0; j < 32; ++j) {
        const unsigned idx = at_warp->warp * 32 + j;
        if (!(at_warp->mask >> j & 1) || idx >= n) continue;
        const Thread& u = L.threads[idx];
        if (u.state != State::kWarp) {
          o << "lane " << j << " " << describe(u);
          break;
        }
      }
      L.error = prefix(L, at_warp) + o.str();
      return false;
    }
    // Every thread left waits at a barrier: all must be there, at the same one.
    if (exited) {
      L.error = prefix(L, nullptr) + "__syncthreads at " + where(at_barrier->site) + " is reached by " +
                std::to_string(n - done) + " of " + std::to_string(n) + " threads, but " + describe(*exited);
      return false;
    }
    for (const Thread& t : L.threads) {
      if (t.site.line != at_barrier->site.line || std::strcmp(t.site.file, at_barrier->site.file) != 0) {
        L.error = prefix(L, nullptr) + "threads wait at different barriers: " + describe(*at_barrier) + ", " +
                  describe(t);
        return false;
      }
    }
    for (Thread& t : L.threads) t.state = State::kReady;
    ++L.barriers;
    order = make_order(n, block_linear, ++phase);
  }
  // Canaries after the shared arrays and the dynamic buffer; the block's total shared memory.
  for (const Region* r : L.touched) {
    if (!canary_intact(r)) {
      L.error = prefix(L, nullptr) + "a write past the end of " + r->what + " (" + std::to_string(r->size) + " bytes)";
      return false;
    }
  }
  if (!canary_intact(g_dynamic)) {
    L.error = prefix(L, nullptr) + "a write past the end of " + g_dynamic->what + " (" +
              std::to_string(g_dynamic->size) + " bytes)";
    return false;
  }
  if (L.static_bytes + s.smem > static_cast<size_t>(g_settings.smem_optin)) {
    L.error = prefix(L, nullptr) + std::to_string(L.static_bytes) + " bytes of static and " + std::to_string(s.smem) +
              " of dynamic shared memory exceed the device's " + std::to_string(g_settings.smem_optin);
    return false;
  }
  return true;
}

std::string base_name(const char* name) {
  std::string s(name);
  const auto lt = s.find('<');
  return lt == std::string::npos ? s : s.substr(0, lt);
}

}  // namespace

// --- device side ---
void syncthreads(Site site) {
  Thread* t = g_launch->current;
  t->state = State::kBarrier;
  t->site = site;
  yield(t);
}

int lane_id() { return static_cast<int>(g_launch->current->lane); }

uint64_t warp_collective(Site site, WarpOp op, unsigned mask, uint64_t value, int src_lane) {
  Launch& L = *g_launch;
  Thread* t = L.current;
  const unsigned n = static_cast<unsigned>(L.threads.size());
  const unsigned base = t->warp * 32;
  // The error text is built only on failure: this runs once per lane and collective.
  auto head = [&] {
    std::ostringstream o;
    o << op_name(op) << " at " << where(site) << " with mask 0x" << std::hex << mask << std::dec << ": ";
    return o.str();
  };
  if (!(mask >> t->lane & 1)) fail(head() + "the mask excludes the calling lane " + std::to_string(t->lane));
  t->op = op;
  t->mask = mask;
  t->value = value;
  t->src = src_lane;
  t->site = site;
  // The warp's pending collectives (disjoint masks): join the one that names this lane, which must be
  // the same collective, or open one after checking that every lane of the mask can still arrive.
  std::vector<Pending>& pending = L.pending[t->warp];
  auto hex = [](unsigned m) {
    std::ostringstream h;
    h << "0x" << std::hex << m;
    return h.str();
  };
  size_t g = pending.size();
  for (size_t i = 0; i < pending.size(); ++i) {
    const Pending& p = pending[i];
    if (!(p.mask & mask)) continue;
    const bool same_site = p.site.line == site.line && std::strcmp(p.site.file, site.file) == 0;
    if (p.mask != mask || p.op != op || (op != WarpOp::kSyncwarp && !same_site))
      fail(head() + "lanes of the warp wait at " + op_name(p.op) + " at " + where(p.site) + " with mask " + hex(p.mask));
    g = i;
    break;
  }
  if (g == pending.size()) {
    for (unsigned j = 0; j < 32; ++j) {
      if (!(mask >> j & 1) || j == t->lane) continue;
      if (base + j >= n) fail(head() + "lane " + std::to_string(j) + " does not exist (" + std::to_string(n) + " threads)");
      if (L.threads[base + j].state == State::kDone)
        fail(head() + "lane " + std::to_string(j) + " named in the mask has exited");
    }
    pending.push_back(Pending{mask, op, site, 0});
  }
  if (++pending[g].arrived < static_cast<unsigned>(__builtin_popcount(mask))) {
    t->state = State::kWarp;
    yield(t);
    return t->result;
  }
  pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(g));
  // Every lane of the mask is here: compute each one's result.
  uint64_t ballot = 0;
  for (unsigned j = 0; j < 32; ++j)
    if ((mask >> j & 1) && L.threads[base + j].value != 0) ballot |= uint64_t{1} << j;
  for (unsigned j = 0; j < 32; ++j) {
    if (!(mask >> j & 1)) continue;
    Thread& u = L.threads[base + j];
    switch (op) {
      case WarpOp::kSyncwarp: u.result = 0; break;
      case WarpOp::kBallot: u.result = ballot; break;
      case WarpOp::kMatchAny: {
        uint64_t m = 0;
        for (unsigned k = 0; k < 32; ++k)
          if ((mask >> k & 1) && L.threads[base + k].value == u.value) m |= uint64_t{1} << k;
        u.result = m;
        break;
      }
      case WarpOp::kShfl: {
        const int src = u.src;
        if (src < 0 || src > 31 || !(mask >> src & 1))
          fail(head() + "lane " + std::to_string(j) + " reads lane " + std::to_string(src) + ", outside the mask");
        u.result = L.threads[base + static_cast<unsigned>(src)].value;
        break;
      }
    }
    if (&u != t) u.state = State::kReady;
  }
  return t->result;
}

void* SharedSite::touch(size_t bytes, size_t align, const char* name) {
  Launch& L = *g_launch;
  auto* r = static_cast<Region*>(region);
  if (!r) {
    r = region_new(bytes, align, std::string("the shared array '") + name + "'");
    region = r;
  }
  if (r->epoch != L.epoch) {
    r->epoch = L.epoch;
    std::memset(r->data, g_settings.poison, r->size);
    std::memset(r->data + r->size, kCanary, r->slack());
    L.touched.push_back(r);
    L.static_bytes += bytes;
  }
  return r->data;
}

void* dynamic_shared_base() { return g_dynamic->data; }

// --- host side ---
void run_launch(const LaunchSpec& spec, const std::function<void()>& body) {
  std::lock_guard<std::recursive_mutex> lock(g_launch_mutex);
  if (g_launch) throw std::runtime_error(std::string("emulated CUDA: kernel ") + spec.name + " launched from a kernel");
  const unsigned nthreads = spec.block.x * spec.block.y * spec.block.z;
  check_spec(spec, nthreads);
  ensure_stacks(nthreads);
  prepare_dynamic(spec.smem);
  if (!g_altstack) {
    g_altstack = static_cast<char*>(std::malloc(1 << 16));
  }
  Launch L;
  L.spec = &spec;
  L.body = &body;
  L.threads.resize(nthreads);
  L.pending.resize((nthreads + 31) / 32);
  for (unsigned i = 0; i < nthreads; ++i) {
    Thread& t = L.threads[i];
    t.linear = i;
    t.lane = i % 32;
    t.warp = i / 32;
    t.coords.thread_idx = dim3(i % spec.block.x, i / spec.block.x % spec.block.y, i / (spec.block.x * spec.block.y));
    t.coords.block_dim = spec.block;
    t.coords.grid_dim = spec.grid;
  }
  // The fault handler runs on its own stack (a fiber's may be the one that overflowed).
  stack_t alt{}, old_alt{};
  alt.ss_sp = g_altstack;
  alt.ss_size = 1 << 16;
  sigaltstack(&alt, &old_alt);
  struct sigaction sa{};
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_old_segv);
  sigaction(SIGBUS, &sa, &g_old_bus);
  g_launch = &L;
  Coords* saved = tls_coords;
  bool ok = true;
  uint64_t block_linear = 0;
  for (unsigned z = 0; ok && z < spec.grid.z; ++z)
    for (unsigned y = 0; ok && y < spec.grid.y; ++y)
      for (unsigned x = 0; ok && x < spec.grid.x; ++x) ok = run_block(L, dim3(x, y, z), block_linear++);
  g_launch = nullptr;
  tls_coords = saved;
  sigaction(SIGSEGV, &g_old_segv, nullptr);
  sigaction(SIGBUS, &g_old_bus, nullptr);
  sigaltstack(&old_alt, nullptr);
  KernelStats& st = g_stats[base_name(spec.name)];
  st.launches += 1;
  st.blocks += static_cast<int64_t>(block_linear);
  st.threads += static_cast<int64_t>(block_linear) * nthreads;
  st.barriers += L.barriers;
  if (!ok) throw std::runtime_error(L.error);
  check_device_canaries(spec);
}

cudaError_t set_max_dynamic_smem(const void* fn, int bytes) {
  if (bytes < 0 || bytes > g_settings.smem_optin) return cudaErrorInvalidValue;
  g_max_dynamic_smem[fn] = bytes;
  return cudaSuccess;
}

int device_smem_optin() { return g_settings.smem_optin; }

void set_schedule(Schedule s, uint64_t seed) {
  g_settings.schedule = s;
  g_settings.seed = seed;
}
Schedule schedule() { return g_settings.schedule; }
uint64_t schedule_seed() { return g_settings.seed; }
void set_poison(uint8_t byte) { g_settings.poison = byte; }
uint8_t poison() { return g_settings.poison; }
void set_device_smem_optin(int bytes) { g_settings.smem_optin = bytes; }

void* device_alloc(size_t bytes) {
  Region* r = region_new(bytes, 16, "an emu allocation");
  std::lock_guard<std::mutex> lock(g_regions_mutex);
  g_device[r->data] = r;
  return r->data;
}

void device_free(void* data) {
  Region* r = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_regions_mutex);
    auto it = g_device.find(data);
    if (it == g_device.end()) return;
    r = it->second;
    g_device.erase(it);
  }
  region_delete(r);
}

std::map<std::string, KernelStats> kernel_stats() { return g_stats; }
void reset_kernel_stats() { g_stats.clear(); }

}  // namespace deephash_emu
