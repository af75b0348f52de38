// Building blocks for atomic outputs, single- and multi-file (AtomicFileWriter in io.h is built on them).
//
// Naming: temporaries are ".tb-<16 hex>.tmp" (files) and ".tb-<16 hex>.tmpdir" (folders) in the target's
// folder: short, so every valid target name works. A live temporary is flock()ed by its writer; one
// whose lock is free was left by a killed process and is removed by the next writer into that folder.
// Multi-file outputs write their parts under new names (a generation token "tb<8 hex>" when the plain
// name is taken), commit with one rename, then delete the previous set (see sharded.cpp, onnx.cpp,
// oneflow.cpp). Renames use renameat2 (no-replace, exchange), with link/unlink or rename fallbacks.
// Live temporaries are listed in the registry of temp_cleanup.h, emptied by the SIGINT/SIGTERM handler.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/io.h"
#include "tensor/temp_cleanup.h"

namespace tb {

/** An open folder (O_DIRECTORY descriptor) for *at() calls; label is its path for messages. */
class DirHandle {
 public:
  /** Opens the folder; throws IoError naming `for_target` when it is missing or not a folder. */
  DirHandle(const std::filesystem::path& dir, const std::filesystem::path& for_target);
  /** Not copyable; the destructor closes the descriptor. */
  ~DirHandle();
  DirHandle(const DirHandle&) = delete;
  DirHandle& operator=(const DirHandle&) = delete;
  /** The O_DIRECTORY descriptor, owned by this handle (valid while it lives). */
  int fd() const { return fd_; }
  /** The folder opened ("." for a target without a folder part). */
  const std::filesystem::path& path() const { return path_; }
  /** A file in the folder as the user named it: "name" when the target had no folder part. */
  std::string display(const std::string& name) const;
  /** Makes renames and creations in the folder durable (errors ignored: not every file system can). */
  void sync() const;

 private:
  std::filesystem::path path_, given_;
  int fd_ = -1;
};

/** The folder of a target path ("." when it has none). */
std::filesystem::path folder_of(const std::filesystem::path& target);

/** "tb" + 8 random hex digits: the generation part of a multi-file output's new names. */
std::string generation_token();
/** True for "tb" + 8 hex digits. */
bool is_generation_token(std::string_view s);
/** stem when stem.size() + reserve fits in a file name (255 bytes); else a prefix of it plus "-" and
 *  8 hex digits of its hash, so that derived names (stem + suffix of `reserve` bytes) stay valid. */
std::string fit_name_stem(const std::string& stem, size_t reserve);

/** A fresh temporary name: ".tb-<16 hex>.tmp", or ".tb-<16 hex>.tmpdir" for a folder. */
std::string temp_name(bool folder);
/** True for names temp_name() makes. */
bool is_temp_name(std::string_view name);

/** What a file target holds now (lstat; symlinks not followed). */
struct TargetInfo {
  bool exists = false;
  mode_t mode = 0;  // permission bits of an existing regular file
  uid_t uid = 0;
  gid_t gid = 0;
};
/** Checks that `name` in dir may be written: refuses an existing target without overwrite ("already
 *  exists; pass --force"), and always refuses a symlink, a folder, a device, a FIFO or a socket there. */
TargetInfo check_file_target(const DirHandle& dir, const std::string& name, bool overwrite);
/** lstat of name in dir; false when it does not exist. Throws IoError on other errors. */
bool stat_entry(const DirHandle& dir, const std::string& name, struct stat& st);

/** renameat2(RENAME_NOREPLACE) within one folder (fallback link + unlink); throws IoError "already exists"
 *  when `to` appeared meanwhile. */
void rename_no_replace(const DirHandle& dir, const std::string& from, const std::string& to);
/** Rename replacing `to` (renameat2 with no flags); throws IoError. */
void rename_replace(const DirHandle& dir, const std::string& from, const std::string& to);
/** renameat2(RENAME_EXCHANGE); false when the file system does not support it. Throws IoError otherwise. */
bool rename_exchange(const DirHandle& dir, const std::string& a, const std::string& b);

/** Removes the temporaries (temp_name()) in a folder whose writers are gone (lock free). Never throws. */
void remove_stale_temps(const DirHandle& dir);
/** Removes each regular file in dir whose name match() accepts, unless a live writer holds its lock.
 *  Never throws. */
void remove_unlocked_files(const DirHandle& dir, const std::function<bool(const std::string&)>& match);
/** Removes a folder and everything in it (symlinks are removed, never followed). Never throws. */
void remove_tree(const DirHandle& dir, const std::string& name);

/** Exclusive flock on a folder for a multi-step commit (commit rename + deleting the previous set), so two
 *  writers of the same output do not delete each other's parts. */
class FolderLock {
 public:
  /** Blocks until the lock is held; best effort: if the folder cannot be opened it holds nothing. */
  explicit FolderLock(const DirHandle& dir);
  /** Not copyable; the destructor closes the descriptor, which releases the lock. */
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
};

/** Starts the disk writeback of a file being written after every 16 MiB handed to the kernel
 *  (sync_file_range, no wait), so the fsync before the commit finds little left to write. Used by
 *  NewFileWriter and by the HDF5 writer on HDF5's own descriptor. */
class WritebackPacer {
 public:
  /** Counts n more bytes written to fd; every 16 MiB starts the writeback of fd's dirty pages. */
  void wrote(int fd, uint64_t n);

 private:
  uint64_t pending_ = 0;  // bytes written since the last start
};

/** Buffered writer to a new file created under its final name in dir (O_EXCL, locked, registered for
 *  signal cleanup): a part of a multi-file output. Removed on destruction unless keep() ran after the
 *  output's commit point. */
class NewFileWriter : public Writer {
 public:
  /** Creates dir/name; false from created() when the name is taken (EEXIST). Throws IoError otherwise. */
  NewFileWriter(const DirHandle& dir, const std::string& name);
  /** Not copyable; the destructor removes the file (and its cleanup registration) unless keep() ran,
   *  then closes it. Buffered bytes not written by finish() are dropped. */
  ~NewFileWriter() override;
  NewFileWriter(const NewFileWriter&) = delete;
  NewFileWriter& operator=(const NewFileWriter&) = delete;

  /** False when the name was already taken; the object then must not be written. */
  bool created() const { return fd_ >= 0; }
  /** The file's name within dir. */
  const std::string& name() const { return name_; }
  using Writer::write;
  /** Buffers up to 1 MiB, writing larger blocks straight through; throws IoError on a failed write. */
  void write(const void* data, size_t n) override;
  /** Bytes written so far, buffered ones included. */
  uint64_t tell() const override { return written_; }
  /** Flushes the buffer, then copy_file_range; returns the bytes copied (0..n), the caller writes the rest. */
  size_t copy_from_file(int fd, uint64_t offset, size_t n) override;
  /** Gives the file a replaced file's permission bits (and owner, where allowed). */
  void keep_mode(mode_t mode, uid_t uid, gid_t gid);
  /** Writes out the buffer and (with sync) fsyncs; the file stays removable until keep(). Parts of a
   *  TempFolder skip the fsync: the folder's commit syncs them all in one pass. */
  void finish(bool sync = true);
  /** After the commit point: the file is part of the output now. */
  void keep();

 private:
  /** Writes n bytes to the descriptor, retrying on EINTR and short writes; throws IoError. */
  void write_all(const uint8_t* p, size_t n);
  const DirHandle& dir_;
  std::string name_;
  int fd_ = -1;
  uint64_t written_ = 0;
  WritebackPacer writeback_;
  std::vector<uint8_t> buf_;
  TempRegistration reg_;
  bool kept_ = false;
};

/** A hidden temporary folder beside a target (temp_name(true)), locked and registered; removed on
 *  destruction unless commit() installed it. */
class TempFolder {
 public:
  /** Creates and locks the temporary folder beside target (removing stale ones); throws IoError. */
  explicit TempFolder(const std::filesystem::path& target);
  /** Not copyable; the destructor removes the folder and its contents unless commit() installed it. */
  ~TempFolder();
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;
  /** The temporary folder's path; write the output's files here before commit(). */
  const std::filesystem::path& path() const { return path_; }
  /** Moves the folder to the target: a no-replace rename when the target is absent, else (overwrite)
   *  an atomic exchange, after which the previous target is removed. check_existing(path) may throw to
   *  refuse replacing what is there. */
  void commit(bool overwrite, const std::function<void(const std::filesystem::path&)>& check_existing = {});

 private:
  std::filesystem::path target_, path_;
  std::string name_;
  DirHandle parent_;
  int fd_ = -1;
  TempRegistration reg_;
  bool done_ = false;
};

}  // namespace tb
