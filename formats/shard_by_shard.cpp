// Shard-by-shard conversion of sharded checkpoints; the rules are in shard_by_shard.h.
#include "formats/shard_by_shard.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <exception>
#include <mutex>
#include <set>
#include <thread>

#include "formats/detail/open_beneath.h"
#include "formats/safetensors.h"
#include "tensor/atomic_output.h"

namespace tb {

namespace fs = std::filesystem;

std::pair<size_t, size_t> parse_slice(const std::string& text) {
  const std::string form = "--shards '" + text + "': expected I/N with 0 <= I < N (slice I of N, e.g. 0/4)";
  size_t slash = text.find('/');
  TB_CHECK(slash != std::string::npos && slash > 0 && slash + 1 < text.size(), UnsupportedError, form);
  auto number = [&](const std::string& s) {
    TB_CHECK(s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos, UnsupportedError, form);
    return size_t(std::stoul(s));
  };
  size_t i = number(text.substr(0, slash)), n = number(text.substr(slash + 1));
  TB_CHECK(n > 0 && i < n, UnsupportedError, form);
  return {i, n};
}

std::vector<size_t> shards_of_slice(size_t count, size_t i, size_t n) {
  std::vector<size_t> ks;
  for (size_t k = i; k < count; k += n) ks.push_back(k);
  return ks;
}

void write_output_shard(const ShardTarget& target, size_t k, size_t count, const StateDict& sd,
                        const Metadata& metadata, bool overwrite) {
  write_safetensors_atomically(sd, metadata, target.folder / shard_file_name(target.stem, k, count), overwrite);
}

void check_single_output(const ShardTarget& target, bool overwrite) {
  if (overwrite) return;
  DirHandle dir(target.folder, target.single);
  struct stat st {};
  const std::string name = target.single.filename().string();
  TB_CHECK(!stat_entry(dir, name, st), IoError, "'", dir.display(name),
           "' already exists and readers would take it for the output; pass --force to replace it by the shards");
}

fs::path write_index_when_complete(const ShardTarget& target, size_t count, bool overwrite) {
  DirHandle dir(target.folder, target.folder / (target.stem + ".safetensors.index.json"));
  FolderLock lock(dir);  // one slice at a time looks at the set and writes the index
  struct stat st {};
  std::vector<std::string> files;
  for (size_t k = 0; k < count; ++k) {
    files.push_back(shard_file_name(target.stem, k, count));
    if (!stat_entry(dir, files.back(), st)) return {};
  }
  // The index describes the files as they are: each output shard's header is read back.
  const ConfinedFolder folder(target.folder, "the output folder");
  std::vector<StateDict> shards;
  shards.reserve(count);
  for (const auto& f : files)
    shards.push_back(load_safetensors(folder.open_file(f, "[sharded] output shard", true)).state_dict());
  std::vector<std::pair<std::string, const StateDict*>> listed;
  for (size_t k = 0; k < count; ++k) listed.emplace_back(files[k], &shards[k]);
  const fs::path index = target.folder / (target.stem + ".safetensors.index.json");
  AtomicFileWriter w(index, true);
  w.write(shard_index_json(listed));
  w.commit();
  // What the index replaces: the single file (readers prefer it) and shards of an earlier split.
  const std::string single = target.single.filename().string();
  if (overwrite && stat_entry(dir, single, st) && S_ISREG(st.st_mode)) ::unlinkat(dir.fd(), single.c_str(), 0);
  const std::set<std::string> mine(files.begin(), files.end());
  remove_unlocked_files(dir, [&](const std::string& f) { return is_shard_name(f, target.stem) && !mine.count(f); });
  dir.sync();
  return index;
}

void run_on_threads(const std::vector<size_t>& ks, unsigned jobs, const std::function<void(size_t)>& work) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first;
  std::mutex m;
  auto worker = [&] {
    for (size_t i = next++; i < ks.size() && !failed; i = next++) {
      try {
        work(ks[i]);
      } catch (...) {
        std::lock_guard<std::mutex> g(m);
        if (!first) first = std::current_exception();
        failed = true;
      }
    }
  };
  const size_t threads = std::max<size_t>(1, std::min<size_t>(jobs, ks.size()));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  if (first) std::rethrow_exception(first);
}

}  // namespace tb
