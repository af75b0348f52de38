#include "tensor/temp_cleanup.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>

namespace tb {

namespace {

// One record of getdents64 (struct linux_dirent64).
struct Dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[1];
};

void remove_tree_raw(int parent, const char* name, int depth) {
  if (::unlinkat(parent, name, 0) == 0 || errno == ENOENT) return;  // a file or a symlink
  if (depth > 32) return;
  int fd = ::openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  alignas(8) char buf[2048];
  for (int pass = 0; pass < 64; ++pass) {  // entries removed while listing may hide others: list again
    bool removed = false;
    ::lseek(fd, 0, SEEK_SET);
    for (;;) {
      long n = ::syscall(SYS_getdents64, fd, buf, sizeof buf);
      if (n <= 0) break;
      for (long off = 0; off < n;) {
        auto* d = reinterpret_cast<Dirent64*>(buf + off);
        off += d->d_reclen;
        const char* nm = d->d_name;
        if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0'))) continue;
        remove_tree_raw(fd, nm, depth + 1);
        removed = true;
      }
    }
    if (!removed) break;
  }
  ::close(fd);
  ::unlinkat(parent, name, AT_REMOVEDIR);
}

// ---------------------------------------------------------------------------------------------
// Registry of live temporaries for the signal handler.
struct Slot {
  std::atomic<int> state{0};  // 0 free, 1 being filled or emptied, 2 live
  int dir_fd = -1;
  bool folder = false;
  pid_t pid = 0;
  char name[128] = {};
};
constexpr int kSlots = 256;
Slot g_slots[kSlots];
const int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
struct sigaction g_previous[3];

void on_signal(int sig, siginfo_t* info, void* uctx) {
  const int saved = errno;
  const pid_t me = ::getpid();
  for (auto& s : g_slots) {
    int live = 2;
    if (!s.state.compare_exchange_strong(live, 1)) continue;
    if (s.pid == me) {
      if (s.folder)
        remove_tree_raw(s.dir_fd, s.name, 0);
      else
        ::unlinkat(s.dir_fd, s.name, 0);
    }
    s.state.store(2);
  }
  for (int i = 0; i < 3; ++i) {
    if (kSignals[i] != sig) continue;
    const struct sigaction& prev = g_previous[i];
    if ((prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction) {
      errno = saved;
      prev.sa_sigaction(sig, info, uctx);
      return;
    }
    if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
      errno = saved;
      prev.sa_handler(sig);
      return;
    }
  }
  ::signal(sig, SIG_DFL);  // the default action (termination) once this handler returns
  ::raise(sig);
  errno = saved;
}

}  // namespace

void remove_tree_at(int dir_fd, const char* name) { remove_tree_raw(dir_fd, name, 0); }

void install_temp_cleanup_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (int i = 0; i < 3; ++i) {
      struct sigaction prev {};
      if (::sigaction(kSignals[i], nullptr, &prev) != 0) continue;
      if (!(prev.sa_flags & SA_SIGINFO) && prev.sa_handler == SIG_IGN) continue;  // stays ignored
      g_previous[i] = prev;
      struct sigaction sa {};
      sa.sa_sigaction = on_signal;
      sa.sa_flags = SA_SIGINFO | SA_RESTART;
      sigemptyset(&sa.sa_mask);
      for (int s : kSignals) sigaddset(&sa.sa_mask, s);
      ::sigaction(kSignals[i], &sa, nullptr);
    }
  });
}

TempRegistration::TempRegistration(int dir_fd, const std::string& name, bool folder) {
  if (name.size() >= sizeof(Slot::name)) return;
  for (int i = 0; i < kSlots; ++i) {
    int free = 0;
    if (!g_slots[i].state.compare_exchange_strong(free, 1)) continue;
    Slot& s = g_slots[i];
    s.dir_fd = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
    s.folder = folder;
    s.pid = ::getpid();
    std::memcpy(s.name, name.c_str(), name.size() + 1);
    if (s.dir_fd < 0) {
      s.state.store(0);
      return;
    }
    s.state.store(2);
    slot_ = i;
    return;
  }
}

void TempRegistration::release() {
  if (slot_ < 0) return;
  Slot& s = g_slots[slot_];
  slot_ = -1;
  int live = 2;
  while (!s.state.compare_exchange_weak(live, 1)) live = 2;  // the handler may be using it right now
  ::close(s.dir_fd);
  s.dir_fd = -1;
  s.state.store(0);
}

SignalBlock::SignalBlock() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : kSignals) sigaddset(&set, s);
  ::pthread_sigmask(SIG_BLOCK, &set, &old_);
}

SignalBlock::~SignalBlock() { ::pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

}  // namespace tb
