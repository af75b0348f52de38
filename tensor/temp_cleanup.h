// Removing this process's temporary outputs when SIGINT, SIGTERM or SIGHUP ends it: a registry of live
// temporaries (folder descriptor + short name) that an async-signal-safe handler removes (unlinkat, and
// getdents64 for folders) before the signal takes its course.
#pragma once

#include <signal.h>

#include <string>

namespace tb {

/** Removes a file, symlink or folder tree (symlinks never followed) with syscalls only: safe in a
 *  signal handler. Errors are ignored. */
void remove_tree_at(int dir_fd, const char* name);

/** Removes the registered temporaries of this process on SIGINT, SIGTERM and SIGHUP, then lets the
 *  signal take its course (the previous handler, or the default action). Idempotent; a signal that
 *  was ignored stays ignored. The CLI installs it at start. */
void install_temp_cleanup_handlers();

/** A temporary registered for removal by the signal handler until release(). */
class TempRegistration {
 public:
  /** Registers nothing (a placeholder to move into). */
  TempRegistration() = default;
  /** Registers name in the folder dir_fd (a whole tree when folder; dir_fd is duplicated). Silently registers
   *  nothing when the name is 128 bytes or longer, the 256 slots are full or dup fails. */
  TempRegistration(int dir_fd, const std::string& name, bool folder);
  /** Move-only; destruction releases (the handler no longer removes it). Does not remove the file. */
  ~TempRegistration() { release(); }
  TempRegistration(TempRegistration&& o) noexcept : slot_(o.slot_) { o.slot_ = -1; }
  TempRegistration& operator=(TempRegistration&& o) noexcept {
    if (this != &o) {
      release();
      slot_ = o.slot_;
      o.slot_ = -1;
    }
    return *this;
  }
  /** The signal handler no longer removes it. */
  void release();

 private:
  int slot_ = -1;
};

/** Blocks SIGINT/SIGTERM/SIGHUP for a commit section (rename + releasing registrations), so that a
 *  signal never removes a part the committed output already refers to. */
class SignalBlock {
 public:
  /** Blocks the three signals in this thread; the destructor restores the previous mask. Not copyable. */
  SignalBlock();
  ~SignalBlock();
  SignalBlock(const SignalBlock&) = delete;
  SignalBlock& operator=(const SignalBlock&) = delete;

 private:
  sigset_t old_;
};

}  // namespace tb
