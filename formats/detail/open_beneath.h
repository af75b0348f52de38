// Opening the files an input refers to (ONNX external data, shards named by an index, OneFlow
// variable folders) without ever leaving the input's folder. The folder is opened once; every
// referenced path is then resolved relative to that descriptor, component by component, and refused
// when it is absolute, holds '..' or an empty component, passes through a symbolic link anywhere
// (the folder's own children included), or ends at something other than a regular file (a FIFO, a
// device, a folder). openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) is used where the kernel has it;
// elsewhere openat with O_NOFOLLOW on every component does the same. The folder the user names
// may itself be a symbolic link: that is the user's choice; only what it refers to is confined.
//
// Errors: UnsafeError for a path that escapes (absolute, '..', a symbolic link), FormatError for an
// empty component or an entry that is not a regular file (or not a folder where one is expected),
// IoError for a missing entry or a failing system call. Each message is `context 'rel' why`: the
// caller's context names the referring file and what it refers to ("[sharded] 'x.index.json': shard"),
// then the referenced name and why it was refused ("is a symbolic link; only files inside the
// checkpoint folder are read, never through links").
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tensor/io.h"

namespace tb {

class ConfinedFolder {
 public:
  /** What an entry is, looked at without following a symbolic link. */
  enum class Kind { Missing, File, Folder, Symlink, Other };

  /** Opens the folder the user named (following a symbolic link there); throws IoError. noun names
   *  the folder in messages ("the model's folder"). */
  explicit ConfinedFolder(const std::filesystem::path& path, std::string noun = "the folder");

  /** The folder's path as given: the prefix of every label and message. */
  const std::filesystem::path& path() const { return path_; }

  /** Opens the regular file at rel ('/'-separated, relative) inside this folder, as a Reader labelled
   *  path()/rel (mapped when mmap is set). context starts every message (see above). */
  std::shared_ptr<Reader> open_file(const std::string& rel, const std::string& context, bool mmap = true) const;

  /** Opens the folder at rel inside this one, under the same rules. */
  ConfinedFolder open_folder(const std::string& rel, const std::string& context) const;

  /** What the entry at rel is; Missing also when rel is not a valid inside path or a component on
   *  the way is not a plain folder (open_file/open_folder then say why). Never throws. */
  Kind kind(const std::string& rel) const;

  /** The folder's entries (without "." and ".."), sorted by name, each with its kind (symbolic
   *  links reported as Symlink, never followed); throws IoError when the folder cannot be read. */
  std::vector<std::pair<std::string, Kind>> list() const;

 private:
  ConfinedFolder(std::shared_ptr<const int> fd, std::filesystem::path path, std::string noun)
      : fd_(std::move(fd)), path_(std::move(path)), noun_(std::move(noun)) {}
  /** Descriptor of the entry at rel, which must be a folder (want_folder) or a regular file; throws
   *  why it was refused. */
  int open_inside(const std::string& rel, bool want_folder, const std::string& context) const;

  std::shared_ptr<const int> fd_;  // O_DIRECTORY descriptor, closed with the last copy
  std::filesystem::path path_;
  std::string noun_;
};

}  // namespace tb
