#include "tensor/io.h"

#include "tensor/atomic_output.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>
#include <vector>

namespace tb {

namespace {
std::string errno_text() { return std::strerror(errno); }

int open_or_throw(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TB_CHECK(fd >= 0, IoError, "cannot open '", path.string(), "': ", errno_text());
  return fd;
}

class FileReader : public Reader {
  static constexpr size_t kMinPart = 2u << 20;  // smaller reads stay on the calling thread

 public:
  FileReader(const std::filesystem::path& path, bool use_mmap)
      : FileReader(open_or_throw(path), path.string(), use_mmap) {}
  FileReader(int fd, std::string label, bool use_mmap)
      : label_(std::move(label)), fd_(fd), shared_fd_(new int(fd), [](const int* p) {
          ::close(*p);
          delete p;
        }) {
    TB_ASSERT(fd_ >= 0);
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw IoError(str("cannot stat '", label_, "': ", errno_text()));
    if (S_ISDIR(st.st_mode)) throw IoError(str("'", label_, "' is a directory, expected a file"));
    size_ = uint64_t(st.st_size);
    if (use_mmap && size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd_, 0);
      if (p != MAP_FAILED) {
        size_t len = size_;
        mapping_ = std::shared_ptr<void>(p, [len](void* q) { ::munmap(q, len); });
      }
    }
  }
  ~FileReader() override = default;  // the descriptor closes with the last storage mapped from it
  uint64_t size() const override { return size_; }
  const std::string& label() const override { return label_; }
  void read_at(uint64_t offset, void* dst, size_t n) const override {
    check_range(offset, n, "read");
    // A large read is split over a few threads: page-in and copying run on every core.
    // hardware_concurrency() reads /sys on every call: asked only for reads big enough to split.
    const size_t parts =
        n / kMinPart >= 2 ? std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), n / kMinPart) : 1;
    if (parts >= 2) {
      const size_t each = (n / parts + 4095) & ~size_t(4095);
      std::vector<std::thread> helpers;
      std::exception_ptr failed;
      auto run = [&](size_t from, size_t len) {
        try {
          read_part(offset + from, static_cast<uint8_t*>(dst) + from, len);
        } catch (...) {
          failed = std::current_exception();  // one failure is enough to report
        }
      };
      size_t done = each;
      try {
        for (; done < n; done += each) helpers.emplace_back(run, done, std::min(each, n - done));
      } catch (const std::system_error&) {  // no thread to be had (address-space limit): this one reads the rest
        run(done, n - done);
      }
      run(0, std::min(each, n));
      for (auto& t : helpers) t.join();
      if (failed) std::rethrow_exception(failed);
      return;
    }
    read_part(offset, dst, n);
  }
  void read_part(uint64_t offset, void* dst, size_t n) const {
    if (mapping_) {
      std::memcpy(dst, static_cast<const uint8_t*>(mapping_.get()) + offset, n);
      return;
    }
    auto* out = static_cast<uint8_t*>(dst);
    while (n > 0) {
      ssize_t r = ::pread(fd_, out, std::min<size_t>(n, 1u << 30), off_t(offset));
      if (r < 0 && errno == EINTR) continue;
      TB_CHECK(r > 0, IoError, "read of '", label_, "' failed at offset ", offset, ": ",
               r == 0 ? "unexpected end of file" : errno_text());
      out += r;
      n -= size_t(r);
      offset += uint64_t(r);
    }
  }
  std::shared_ptr<Storage> map(uint64_t offset, size_t n) const override {
    if (!mapping_) return nullptr;
    check_range(offset, n, "map");
    auto s = Storage::wrap(static_cast<uint8_t*>(mapping_.get()) + offset, n, mapping_, Storage::Kind::Mapped);
    s->set_file_origin({shared_fd_, offset});
    return s;
  }
  const uint8_t* contiguous_bytes() const override { return static_cast<const uint8_t*>(mapping_.get()); }

 private:
  std::string label_;
  int fd_ = -1;
  std::shared_ptr<const int> shared_fd_;  // owns fd_
  uint64_t size_ = 0;
  std::shared_ptr<void> mapping_;
};

class MemoryReader : public Reader {
 public:
  MemoryReader(std::vector<uint8_t> bytes, std::string label)
      : bytes_(std::make_shared<std::vector<uint8_t>>(std::move(bytes))), label_(std::move(label)) {}
  uint64_t size() const override { return bytes_->size(); }
  const std::string& label() const override { return label_; }
  void read_at(uint64_t offset, void* dst, size_t n) const override {
    check_range(offset, n, "read");
    if (n) std::memcpy(dst, bytes_->data() + offset, n);
  }
  std::shared_ptr<Storage> map(uint64_t offset, size_t n) const override {
    check_range(offset, n, "map");
    return Storage::wrap(bytes_->data() + offset, n, bytes_, Storage::Kind::External);
  }
  const uint8_t* contiguous_bytes() const override { return bytes_->data(); }

 private:
  std::shared_ptr<std::vector<uint8_t>> bytes_;
  std::string label_;
};

class SubReader : public Reader {
 public:
  SubReader(std::shared_ptr<Reader> parent, uint64_t offset, uint64_t size, std::string label)
      : parent_(std::move(parent)), offset_(offset), size_(size), label_(std::move(label)) {
    parent_->check_range(offset, size, label_);
  }
  uint64_t size() const override { return size_; }
  const std::string& label() const override { return label_; }
  void read_at(uint64_t offset, void* dst, size_t n) const override {
    check_range(offset, n, "read");
    parent_->read_at(offset_ + offset, dst, n);
  }
  std::shared_ptr<Storage> map(uint64_t offset, size_t n) const override {
    check_range(offset, n, "map");
    return parent_->map(offset_ + offset, n);
  }
  const uint8_t* contiguous_bytes() const override {
    const uint8_t* p = parent_->contiguous_bytes();
    return p ? p + offset_ : nullptr;
  }

 private:
  std::shared_ptr<Reader> parent_;
  uint64_t offset_, size_;
  std::string label_;
};
}  // namespace

std::shared_ptr<Storage> Reader::map(uint64_t, size_t) const { return nullptr; }

void Reader::check_range(uint64_t offset, uint64_t n, const std::string& what) const {
  uint64_t sz = size();
  TB_CHECK(offset <= sz && n <= sz - offset, FormatError, "'", label(), "' is truncated: ", what, " needs bytes [",
           offset, ", ", offset + n, ") but the file has ", sz, " bytes");
}

std::vector<uint8_t> Reader::read_bytes(uint64_t offset, size_t n) const {
  check_range(offset, n, "read");
  std::vector<uint8_t> out(n);
  read_at(offset, out.data(), n);
  return out;
}

std::string Reader::read_string(uint64_t offset, size_t n) const {
  check_range(offset, n, "read");
  std::string out(n, '\0');
  read_at(offset, out.data(), n);
  return out;
}

std::shared_ptr<Storage> Reader::load(uint64_t offset, size_t n) const {
  if (auto s = map(offset, n)) return s;
  check_range(offset, n, "read");
  auto s = Storage::allocate(n, false);
  read_at(offset, s->data(), n);
  return s;
}

std::shared_ptr<Reader> open_file(const std::filesystem::path& path, bool use_mmap) {
  return std::make_shared<FileReader>(path, use_mmap);
}

std::shared_ptr<Reader> open_fd(int fd, std::string label, bool use_mmap) {
  return std::make_shared<FileReader>(fd, std::move(label), use_mmap);
}

std::shared_ptr<Reader> memory_reader(std::vector<uint8_t> bytes, std::string label) {
  return std::make_shared<MemoryReader>(std::move(bytes), std::move(label));
}

std::shared_ptr<Reader> sub_reader(std::shared_ptr<Reader> parent, uint64_t offset, uint64_t size, std::string label) {
  return std::make_shared<SubReader>(std::move(parent), offset, size, std::move(label));
}

// ---------------------------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------------------------
void Writer::write_zeros(size_t n) {
  static const uint8_t zeros[4096] = {};
  while (n > 0) {
    size_t k = std::min(n, sizeof(zeros));
    write(zeros, k);
    n -= k;
  }
}

namespace {
// Streaming conversions read tensors through the input's private file mapping; every page touched
// then counts in the process's RSS until unmapped, so converting a 4 GiB file showed 4 GiB peak RSS.
// Once a mapped tensor has been written, its pages are dropped (MADV_DONTNEED): the next access
// re-reads them from the page cache, so nothing changes for the caller. Not when any page of the
// range is anonymous (written through the copy-on-write mapping, /proc/self/pagemap bit 61 clear, or
// swapped): dropping that page would lose the write, so then the range is left alone.
void release_written_pages(const void* data, size_t n) {
  static const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t b = (uintptr_t(data) + page - 1) / page * page, e = (uintptr_t(data) + n) / page * page;
  if (page == 0 || e <= b || e - b < (size_t(1) << 20)) return;  // small tensors: not worth a syscall
  int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  std::vector<uint64_t> entries(4096);
  bool file_pages_only = true;
  for (uintptr_t a = b; a < e && file_pages_only; a += entries.size() * page) {
    const size_t count = std::min<size_t>(entries.size(), (e - a) / page);
    const ssize_t got = ::pread(fd, entries.data(), count * 8, off_t(a / page * 8));
    if (got != ssize_t(count * 8)) file_pages_only = false;
    for (size_t i = 0; file_pages_only && i < count; ++i) {
      const uint64_t v = entries[i];
      const bool present = (v >> 63) & 1, swapped = (v >> 62) & 1, file = (v >> 61) & 1;
      if (swapped || (present && !file)) file_pages_only = false;
    }
  }
  ::close(fd);
  if (file_pages_only) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}
}  // namespace

void release_written_pages(const Tensor& t) {
  if (!t.defined() || !t.storage()) return;
  if (t.storage()->kind() == Storage::Kind::Deferred) t.storage()->release_deferred();
  if (t.is_contiguous() && t.storage()->kind() == Storage::Kind::Mapped) release_written_pages(t.data(), t.nbytes());
}

void Writer::write_tensor(const Tensor& t) {
  if (t.is_contiguous()) {
    // Bytes that lie in a file as they are: copied in the kernel where the writer can.
    const Storage::FileOrigin& o = t.storage()->file_origin();
    size_t done = 0;
    if (o.fd && t.nbytes() >= kKernelCopyMin)
      done = copy_from_file(*o.fd, o.offset + uint64_t(t.byte_offset()), t.nbytes());
    if (done < t.nbytes()) write(t.data() + done, t.nbytes() - done);
    release_written_pages(t);
    return;
  }
  // Gather in bounded chunks: one row-major pass through a 4 MiB buffer.
  Tensor c = t.contiguous();  // simple and correct; views are rare and small in practice
  write(c.data(), c.nbytes());
  release_written_pages(t);
}

namespace {
std::function<void(uint64_t)>& write_progress() {
  static std::function<void(uint64_t)> cb;
  return cb;
}
}  // namespace

void set_write_progress(std::function<void(uint64_t)> cb) { write_progress() = std::move(cb); }

void report_write_progress(uint64_t n) {
  if (write_progress()) write_progress()(n);
}

void MemoryWriter::write(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  bytes_.insert(bytes_.end(), p, p + n);
}

AtomicFileWriter::AtomicFileWriter(const std::filesystem::path& target, bool overwrite)
    : target_(target), overwrite_(overwrite) {
  dir_ = std::make_unique<DirHandle>(folder_of(target_), target_);
  const std::string name = target_.filename().string();
  TB_CHECK(!name.empty() && name != "." && name != "..", IoError, "cannot write '", target_.string(),
           "': it names a folder, expected a file name");
  const TargetInfo old = check_file_target(*dir_, name, overwrite);
  // Temporaries of killed writers: not inside our own temporary folders (those are fresh).
  if (!is_temp_name(dir_->path().filename().string())) remove_stale_temps(*dir_);
  for (int attempt = 0; attempt < 16 && !file_; ++attempt) {
    auto f = std::make_unique<NewFileWriter>(*dir_, temp_name(false));
    if (f->created()) file_ = std::move(f);
  }
  TB_CHECK(file_ != nullptr, IoError, "cannot create a temporary file beside '", target_.string(), "'");
  temp_ = dir_->path() / file_->name();
  if (old.exists) file_->keep_mode(old.mode, old.uid, old.gid);
}

AtomicFileWriter::~AtomicFileWriter() = default;  // file_ removes the temporary unless committed

void AtomicFileWriter::write(const void* data, size_t n) {
  TB_ASSERT(!committed_, "write after commit");
  file_->write(data, n);
}

uint64_t AtomicFileWriter::tell() const { return file_->tell(); }

size_t AtomicFileWriter::copy_from_file(int fd, uint64_t offset, size_t n) {
  TB_ASSERT(!committed_, "write after commit");
  return file_->copy_from_file(fd, offset, n);
}

void AtomicFileWriter::commit() {
  TB_ASSERT(!committed_, "double commit");
  file_->finish();
  const std::string name = target_.filename().string();
  {
    SignalBlock block;  // renamed and unregistered together
    if (overwrite_) {
      // Checked again: a folder or device may have appeared since the constructor looked.
      (void)check_file_target(*dir_, name, true);
      rename_replace(*dir_, file_->name(), name);
    } else {
      rename_no_replace(*dir_, file_->name(), name);
    }
    file_->keep();
    committed_ = true;
  }
  dir_->sync();  // makes the rename durable
}

std::string read_text_file(const std::filesystem::path& path, size_t max_bytes) {
  auto r = open_file(path, false);
  TB_CHECK(r->size() <= max_bytes, FormatError, "'", path.string(), "' is ", r->size(), " bytes; expected at most ",
           max_bytes);
  return r->read_string(0, size_t(r->size()));
}

}  // namespace tb
