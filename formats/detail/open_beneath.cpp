// Confined opening: the folders on the way are opened with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) where the kernel has it, else with openat and
// O_NOFOLLOW one component at a time (a refusal is always diagnosed by that walk, so the message
// names the component). The last component is looked at with fstatat(AT_SYMLINK_NOFOLLOW) before it
// is opened, so a FIFO or a device is never opened at all, and opened with O_NOFOLLOW | O_NONBLOCK;
// fstat then checks that the same regular file was opened.
#include "formats/detail/open_beneath.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#if __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

namespace tb {

namespace {

/** Owns a descriptor: closed when it goes out of scope unless released. */
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

std::string errno_text(int err) { return std::strerror(err); }

/** "a FIFO", "a folder", ... for messages. */
const char* kind_name(mode_t m) {
  if (S_ISREG(m)) return "a regular file";
  if (S_ISDIR(m)) return "a folder";
  if (S_ISLNK(m)) return "a symbolic link";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

ConfinedFolder::Kind kind_of(mode_t m) {
  if (S_ISREG(m)) return ConfinedFolder::Kind::File;
  if (S_ISDIR(m)) return ConfinedFolder::Kind::Folder;
  if (S_ISLNK(m)) return ConfinedFolder::Kind::Symlink;
  return ConfinedFolder::Kind::Other;
}

template <class E>
[[noreturn]] void refuse(const std::string& context, const std::string& rel, const std::string& why) {
  throw E(str(context, " '", rel, "' ", why));
}

/** The components of rel ("." dropped); throws when rel is empty, absolute, holds '..', an empty
 *  component or a NUL byte. */
std::vector<std::string> components(const std::string& rel, const std::string& context, const std::string& noun) {
  TB_CHECK(!rel.empty(), FormatError, context, " '' is an empty path");
  if (rel.find('\0') != std::string::npos) {
    std::string shown;
    for (char ch : rel) shown += ch ? std::string(1, ch) : std::string("\\0");
    throw FormatError(str(context, " '", shown, "' contains a NUL byte"));
  }
  if (rel[0] == '/')
    refuse<UnsafeError>(context, rel, str("is an absolute path; only files inside ", noun, " are read"));
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t slash = rel.find('/', start);
    std::string part = rel.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part == "..") refuse<UnsafeError>(context, rel, str("leaves ", noun, " ('..'); only files inside it are read"));
    if (part.empty()) refuse<FormatError>(context, rel, "has an empty path component");
    if (part != ".") parts.push_back(std::move(part));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (parts.empty()) refuse<FormatError>(context, rel, "names the folder itself, not a file inside it");
  return parts;
}

std::string join(const std::vector<std::string>& parts, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) s += (i ? "/" : "") + parts[i];
  return s;
}

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

/** The folder at path below root via openat2 with every RESOLVE_ flag that keeps it inside; -1 when
 *  the kernel lacks openat2 (or a sandbox forbids it) or the path was refused. */
int openat2_folder(int root, const std::string& path) {
#if defined(SYS_openat2) && defined(RESOLVE_BENEATH)
  static std::atomic<bool> unavailable{false};
  if (unavailable.load(std::memory_order_relaxed)) return -1;
  open_how how{};
  how.flags = uint64_t(kDirFlags);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long fd = -1;
  for (int attempt = 0; attempt < 8; ++attempt) {  // EAGAIN: a concurrent rename; EINTR: a signal
    fd = ::syscall(SYS_openat2, root, path.c_str(), &how, sizeof how);
    if (fd >= 0 || (errno != EINTR && errno != EAGAIN)) break;
  }
  if (fd < 0 && (errno == ENOSYS || errno == EPERM || errno == EINVAL || errno == E2BIG))
    unavailable.store(true, std::memory_order_relaxed);
  return int(fd);
#else
  (void)root, (void)path;
  return -1;
#endif
}

/** The folder holding the last of parts, opened below root one component at a time with
 *  O_NOFOLLOW; throws why when a component is missing, a symbolic link or not a folder. */
Fd walk_folders(int root, const std::vector<std::string>& parts, const std::string& context, const std::string& rel,
                const std::string& noun) {
  Fd owned;
  int parent = root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    Fd next(::openat(parent, parts[i].c_str(), kDirFlags));
    if (next.get() < 0) {
      const int err = errno;
      const std::string on_way = join(parts, i + 1);
      struct stat st {};
      if (::fstatat(parent, parts[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT)
          refuse<IoError>(context, rel, str("does not exist in ", noun, " (no folder '", on_way, "')"));
        refuse<IoError>(context, rel, str("cannot be opened: '", on_way, "': ", errno_text(errno)));
      }
      if (S_ISLNK(st.st_mode))
        refuse<UnsafeError>(context, rel,
                            str("passes through '", on_way, "', which is a symbolic link; only files inside ", noun,
                                " are read, never through links"));
      if (!S_ISDIR(st.st_mode))
        refuse<FormatError>(context, rel,
                            str("passes through '", on_way, "', which is ", kind_name(st.st_mode), ", not a folder"));
      refuse<IoError>(context, rel, str("cannot be opened: '", on_way, "': ", errno_text(err)));
    }
    owned = std::move(next);
    parent = owned.get();
  }
  return owned;
}

}  // namespace

ConfinedFolder::ConfinedFolder(const std::filesystem::path& path, std::string noun)
    : path_(path), noun_(std::move(noun)) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  TB_CHECK(fd >= 0, IoError, "cannot open the folder '", path.string(), "': ", errno_text(errno));
  fd_ = std::shared_ptr<const int>(new int(fd), [](const int* p) {
    ::close(*p);
    delete p;
  });
}

int ConfinedFolder::open_inside(const std::string& rel, bool want_folder, const std::string& context) const {
  const std::vector<std::string> parts = components(rel, context, noun_);
  const std::string links = str("only files inside ", noun_, " are read, never through links");

  // The folder holding the last component.
  Fd owned;
  int parent = *fd_;
  if (parts.size() > 1) {
    owned = Fd(openat2_folder(*fd_, join(parts, parts.size() - 1)));
    if (owned.get() < 0) owned = walk_folders(*fd_, parts, context, rel, noun_);
    parent = owned.get();
  }

  // The last component: looked at first, so a FIFO or a device is never opened.
  const char* last = parts.back().c_str();
  struct stat before {};
  if (::fstatat(parent, last, &before, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) refuse<IoError>(context, rel, str("does not exist in ", noun_));
    refuse<IoError>(context, rel, str("cannot be read: ", errno_text(errno)));
  }
  if (S_ISLNK(before.st_mode)) refuse<UnsafeError>(context, rel, str("is a symbolic link; ", links));
  if (want_folder && !S_ISDIR(before.st_mode))
    refuse<FormatError>(context, rel, str("is ", kind_name(before.st_mode), ", not a folder"));
  if (!want_folder && !S_ISREG(before.st_mode))
    refuse<FormatError>(context, rel, str("is not a regular file (it is ", kind_name(before.st_mode), ")"));

  Fd fd(::openat(parent, last, want_folder ? kDirFlags : O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ELOOP) refuse<UnsafeError>(context, rel, str("is a symbolic link; ", links));
    refuse<IoError>(context, rel, str("cannot be opened: ", errno_text(errno)));
  }
  struct stat after {};
  TB_CHECK(::fstat(fd.get(), &after) == 0, IoError, context, " '", rel, "' cannot be read: ", errno_text(errno));
  if (after.st_dev != before.st_dev || after.st_ino != before.st_ino ||
      kind_of(after.st_mode) != kind_of(before.st_mode))
    refuse<IoError>(context, rel, "changed while it was being opened; try again");
  if (!want_folder) ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
  return fd.release();
}

std::shared_ptr<Reader> ConfinedFolder::open_file(const std::string& rel, const std::string& context, bool mmap) const {
  int fd = open_inside(rel, false, context);
  return open_fd(fd, (path_ / rel).string(), mmap);
}

ConfinedFolder ConfinedFolder::open_folder(const std::string& rel, const std::string& context) const {
  int fd = open_inside(rel, true, context);
  auto shared = std::shared_ptr<const int>(new int(fd), [](const int* p) {
    ::close(*p);
    delete p;
  });
  return ConfinedFolder(std::move(shared), path_ / rel, noun_);
}

ConfinedFolder::Kind ConfinedFolder::kind(const std::string& rel) const {
  try {
    const std::vector<std::string> parts = components(rel, "", noun_);
    Fd owned;
    int parent = *fd_;
    if (parts.size() > 1) {
      owned = Fd(open_inside(join(parts, parts.size() - 1), true, ""));
      parent = owned.get();
    }
    struct stat st {};
    if (::fstatat(parent, parts.back().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return Kind::Missing;
    return kind_of(st.st_mode);
  } catch (...) {
    return Kind::Missing;
  }
}

std::vector<std::pair<std::string, ConfinedFolder::Kind>> ConfinedFolder::list() const {
  // A fresh open of "." (not dup): its own directory position.
  int fd = ::openat(*fd_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  TB_CHECK(fd >= 0, IoError, "cannot list the folder '", path_.string(), "': ", errno_text(errno));
  DIR* dir = ::fdopendir(fd);
  if (!dir) {
    const int err = errno;
    ::close(fd);
    throw IoError(str("cannot list the folder '", path_.string(), "': ", errno_text(err)));
  }
  std::unique_ptr<DIR, int (*)(DIR*)> guard(dir, ::closedir);
  std::vector<std::pair<std::string, Kind>> out;
  while (true) {
    errno = 0;
    const dirent* e = ::readdir(dir);
    if (!e) {
      TB_CHECK(errno == 0, IoError, "cannot list the folder '", path_.string(), "': ", errno_text(errno));
      break;
    }
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    Kind k = ::fstatat(::dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? kind_of(st.st_mode) : Kind::Missing;
    out.emplace_back(std::move(name), k);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace tb
