// No loader opens a file outside its input: files an input refers to (OneFlow meta/out, variable and
// tensor folders, pickled_data; ONNX external data; shards of an index) are opened inside the input's
// folder, never through a symbolic link, never a FIFO or a device, never by '..' or an absolute path;
// and an index that names an index is refused instead of recursing. Links are made by each test in a
// temporary folder (git does not keep them reliably); refusals are checked through the CLI (exit 1,
// the exact reason, no output written) and through the helper itself.
#include "tests/support.h"

#include <fcntl.h>
#include <linux/filter.h>
#if __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#endif
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <fstream>
#include <functional>

#include "formats/detail/open_beneath.h"
#include "formats/sharded.h"

using tbtest::contains;

using namespace tb;
using tbtest::run_cli;
namespace fs = std::filesystem;
using tbtest::error_of;

namespace {

const std::string kSecret = "OUTSIDE-SECRET!!";  // 16 bytes: a float32 [4] tensor's worth

void write_file(const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

/** A OneFlow variable folder holding float32 [4]. */
void make_variable(const fs::path& dir, const std::string& out = std::string(16, '\0')) {
  fs::create_directories(dir);
  write_file(dir / "meta", "shape {\n  dim: 4\n}\ndata_type: kFloat\n");
  write_file(dir / "out", out);
}

/** Moves path out of its folder (to outside/<name>) and leaves a symbolic link to it in its place. */
void replace_with_link(const fs::path& path, const fs::path& outside) {
  fs::path moved = outside / path.filename();
  fs::rename(path, moved);
  fs::create_symlink(moved, path);
}

/** `convert in <tmp>/o.safetensors` exits 1 naming the reason and writes nothing. */
void expect_refused(const fs::path& in, const std::string& reason) {
  tbtest::TempDir out;
  const fs::path target = out / "o.safetensors";
  auto r = run_cli({"convert", in.string(), target.string()});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(contains(r.output, reason));
  CHECK_FALSE(contains(r.output, kSecret));
  CHECK_FALSE(fs::exists(target));
}

/** `convert in <tmp>/o.safetensors` succeeds. */
void expect_converts(const fs::path& in) {
  tbtest::TempDir out;
  auto r = run_cli({"convert", in.string(), (out / "o.safetensors").string()});
  INFO(r.output);
  CHECK(r.exit_code == 0);
}

/** Runs f in a child process where openat2 fails with ENOSYS (as on kernels before 5.6, or in a
 *  sandbox that filters it); 0 when f returned true, 1 when false or it threw, 3 when the filter
 *  could not be installed. */
int without_openat2(const std::function<bool()>& f) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
#ifdef SYS_openat2
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog{sizeof filter / sizeof filter[0], filter};
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
      ::_exit(3);
#endif
    bool ok = false;
    try {
      ok = f();
    } catch (...) {}
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 2;
}

const std::string kLinks = "is a symbolic link; only files inside the checkpoint folder are read, never through links";

}  // namespace

TEST_CASE("the confined folder opens files inside it and refuses links, '..', absolute paths and FIFOs", "[beneath]") {
  tbtest::TempDir tmp;
  const fs::path root = tmp / "root", outside = tmp / "outside";
  fs::create_directories(root / "sub");
  fs::create_directories(outside);
  write_file(root / "a.bin", "hello");
  write_file(root / "sub" / "b.bin", "inner");
  write_file(outside / "secret", kSecret);
  fs::create_symlink(outside / "secret", root / "link");
  fs::create_symlink(outside, root / "dirlink");
  fs::create_symlink("../a.bin", root / "sub" / "sibling");  // stays inside, still a link: refused
  REQUIRE(::mkfifo((root / "fifo").c_str(), 0600) == 0);

  const ConfinedFolder f(root);
  auto r = f.open_file("a.bin", "ctx");
  CHECK(r->size() == 5);
  CHECK(r->label() == (root / "a.bin").string());
  CHECK(r->contiguous_bytes() != nullptr);  // mapped
  CHECK(r->read_string(0, 5) == "hello");
  CHECK(f.open_file("sub/b.bin", "ctx", false)->read_string(0, 5) == "inner");
  CHECK(f.open_file("./sub/b.bin", "ctx")->size() == 5);
  CHECK(f.open_folder("sub", "ctx").open_file("b.bin", "ctx")->size() == 5);

  CHECK(error_of<UnsafeError>([&] { f.open_file("link", "ctx"); }) ==
        "ctx 'link' is a symbolic link; only files inside the folder are read, never through links");
  CHECK(error_of<UnsafeError>([&] { f.open_file("dirlink/secret", "ctx"); }) ==
        "ctx 'dirlink/secret' passes through 'dirlink', which is a symbolic link; only files inside the folder are "
        "read, never through links");
  CHECK(
      contains(error_of<UnsafeError>([&] { f.open_file("sub/sibling", "ctx"); }), "'sub/sibling' is a symbolic link"));
  CHECK(contains(error_of<UnsafeError>([&] { f.open_folder("dirlink", "ctx"); }), "'dirlink' is a symbolic link"));
  CHECK(error_of<UnsafeError>([&] { f.open_file("sub/../a.bin", "ctx"); }) ==
        "ctx 'sub/../a.bin' leaves the folder ('..'); only files inside it are read");
  CHECK(error_of<UnsafeError>([&] { f.open_file("/etc/passwd", "ctx"); }) ==
        "ctx '/etc/passwd' is an absolute path; only files inside the folder are read");
  CHECK(error_of<FormatError>([&] { f.open_file("sub//b.bin", "ctx"); }) ==
        "ctx 'sub//b.bin' has an empty path component");
  CHECK(error_of<FormatError>([&] { f.open_file("", "ctx"); }) == "ctx '' is an empty path");
  CHECK(error_of<FormatError>([&] { f.open_file(std::string("a.bin\0x", 7), "ctx"); }) ==
        "ctx 'a.bin\\0x' contains a NUL byte");
  // A FIFO is refused without being opened (opening it would wait for a writer).
  CHECK(error_of<FormatError>([&] { f.open_file("fifo", "ctx"); }) ==
        "ctx 'fifo' is not a regular file (it is a FIFO)");
  CHECK(error_of<FormatError>([&] { f.open_file("sub", "ctx"); }) ==
        "ctx 'sub' is not a regular file (it is a folder)");
  CHECK(error_of<FormatError>([&] { f.open_folder("a.bin", "ctx"); }) == "ctx 'a.bin' is a regular file, not a folder");
  CHECK(error_of<FormatError>([&] { f.open_file("a.bin/x", "ctx"); }) ==
        "ctx 'a.bin/x' passes through 'a.bin', which is a regular file, not a folder");
  CHECK(error_of<IoError>([&] { f.open_file("nothere", "ctx"); }) == "ctx 'nothere' does not exist in the folder");
  CHECK(error_of<IoError>([&] { f.open_file("no/b.bin", "ctx"); }) ==
        "ctx 'no/b.bin' does not exist in the folder (no folder 'no')");

  using K = ConfinedFolder::Kind;
  CHECK(f.kind("a.bin") == K::File);
  CHECK(f.kind("sub") == K::Folder);
  CHECK(f.kind("link") == K::Symlink);
  CHECK(f.kind("fifo") == K::Other);
  CHECK(f.kind("nothere") == K::Missing);
  CHECK(f.kind("dirlink/secret") == K::Missing);  // never looked at through the link
  CHECK(f.kind("../root/a.bin") == K::Missing);
  std::vector<std::pair<std::string, K>> want = {
      {"a.bin", K::File}, {"dirlink", K::Symlink}, {"fifo", K::Other}, {"link", K::Symlink}, {"sub", K::Folder}};
  CHECK(f.list() == want);

  // The folder the user names may itself be a link (the user's choice); its contents are still confined.
  fs::create_symlink(root, tmp / "alias");
  const ConfinedFolder via_alias(tmp / "alias", "the model's folder");
  CHECK(via_alias.open_file("sub/b.bin", "ctx")->size() == 5);
  CHECK(contains(error_of<UnsafeError>([&] { via_alias.open_file("link", "ctx"); }),
                 "only files inside the model's folder are read"));
  CHECK(contains(error_of<IoError>([&] { ConfinedFolder(tmp / "missing"); }), "cannot open the folder"));
}

TEST_CASE("without openat2 (older kernels, sandboxes) the component walk confines the same way", "[beneath]") {
  tbtest::TempDir tmp;
  const fs::path root = tmp / "root";
  fs::create_directories(root / "sub" / "deeper");
  write_file(root / "sub" / "deeper" / "c.bin", "walked");
  fs::create_symlink(root / "sub", root / "sublink");
  const int rc = without_openat2([&] {
    const ConfinedFolder f(root);
#if defined(SYS_openat2) && defined(RESOLVE_BENEATH)
    open_how how{};
    if (::syscall(SYS_openat2, AT_FDCWD, ".", &how, sizeof how) >= 0 || errno != ENOSYS) return false;
#endif
    auto refused = [&](const std::string& rel, const std::string& why) {
      try {
        f.open_file(rel, "ctx");
      } catch (const UnsafeError& e) {
        return std::string(e.what()) == "ctx '" + rel + "' " + why;
      }
      return false;
    };
    return f.open_file("sub/deeper/c.bin", "ctx")->read_string(0, 6) == "walked" &&
           f.open_folder("sub/deeper", "ctx").list().size() == 1 &&
           f.kind("sub/deeper/c.bin") == ConfinedFolder::Kind::File &&
           refused("sublink/deeper/c.bin",
                   "passes through 'sublink', which is a symbolic link; only files inside the "
                   "folder are read, never through links") &&
           refused("sub/../sublink/deeper/c.bin", "leaves the folder ('..'); only files inside it are read");
  });
  if (rc == 3) tbtest::skip("cannot install a seccomp filter here");
  CHECK(rc == 0);
}

TEST_CASE("OneFlow variable folders: a linked out, meta or variable folder is refused, not followed", "[beneath]") {
  tbtest::TempDir tmp;
  const fs::path outside = tmp / "outside";
  fs::create_directories(outside);

  // A single variable folder whose out links to a file elsewhere.
  make_variable(tmp / "var");
  write_file(outside / "secret", kSecret);
  fs::remove(tmp / "var" / "out");
  fs::create_symlink(outside / "secret", tmp / "var" / "out");
  expect_refused(tmp / "var", "'out' " + kLinks);
  // ... or whose meta does.
  make_variable(tmp / "var2");
  replace_with_link(tmp / "var2" / "meta", outside);
  expect_refused(tmp / "var2", "'meta' " + kLinks);
  // ... or whose out is a FIFO: refused at once, never waited on.
  make_variable(tmp / "var3");
  fs::remove(tmp / "var3" / "out");
  REQUIRE(::mkfifo((tmp / "var3" / "out").c_str(), 0600) == 0);
  expect_refused(tmp / "var3", "'out' is not a regular file (it is a FIFO)");

  // nn.Graph variable folders: one of them a link to a variable folder elsewhere.
  make_variable(tmp / "graph" / "model.a");
  make_variable(tmp / "graph" / "model.b", kSecret);
  expect_converts(tmp / "graph");
  replace_with_link(tmp / "graph" / "model.b", outside);
  expect_refused(tmp / "graph", "'model.b' " + kLinks);

  // A legacy snapshot (snapshot_done) and the SavedModel folder around one (variables/).
  make_variable(tmp / "saved" / "variables" / "w");
  write_file(tmp / "saved" / "variables" / "snapshot_done", "");
  make_variable(tmp / "saved" / "variables" / "v");
  expect_converts(tmp / "saved");
  replace_with_link(tmp / "saved" / "variables" / "v", outside);
  expect_refused(tmp / "saved", "'v' " + kLinks);
  expect_refused(tmp / "saved" / "variables", "'v' " + kLinks);
  fs::remove(tmp / "saved" / "variables" / "v");
  replace_with_link(tmp / "saved" / "variables", outside);
  expect_refused(tmp / "saved", "'variables' " + kLinks);
}

TEST_CASE("OneFlow whole-module folders: a linked tensor_N, pickled_data or out is refused", "[beneath]") {
  tbtest::TempDir tmp;
  const fs::path fixture = tbtest::fixture("oneflow_extra/whole_module_seq");
  const fs::path outside = tmp / "outside", d = tmp / "module";
  fs::create_directories(outside);
  auto fresh_copy = [&] {
    fs::remove_all(d);
    fs::remove_all(outside);
    fs::create_directories(outside);
    fs::copy(fixture, d, fs::copy_options::recursive);
  };
  fresh_copy();
  expect_converts(d);
  // The folder named by the user may be a link: that is the user's choice.
  fs::create_symlink(d, tmp / "alias");
  expect_converts(tmp / "alias");

  replace_with_link(d / "tensor_3", outside);
  expect_refused(d, "pickled_data': tensor folder 'tensor_3' " + kLinks);
  fresh_copy();
  replace_with_link(d / "tensor_0" / "out", outside);
  expect_refused(d, "tensor_0': 'out' " + kLinks);
  fresh_copy();
  replace_with_link(d / "pickled_data", outside);
  expect_refused(d, "'pickled_data' " + kLinks);
}

TEST_CASE("ONNX external data: linked folders and files, '..', absolute paths and FIFOs are refused", "[beneath]") {
  tbtest::TempDir tmp;
  StateDict sd;
  sd.insert("w", Tensor::from_vector<float>(DType::F32, {4}, {1, 2, 3, 4}));
  SaveOptions so;
  so.options["external_data"] = "always";
  try {
    save(Checkpoint::from_state_dict(sd), tmp / "m.onnx", "onnx", so);
  } catch (const UnsupportedError& e) {
    tbtest::skip(std::string("this build writes no ONNX: ") + e.what());
  }
  const std::string model = read_file(tmp / "m.onnx"), data = read_file(tmp / "m.onnx.data");
  const std::string location = "m.onnx.data";
  REQUIRE(contains(model, location));
  // The same model with another 11-character location (the protobuf lengths stay valid).
  auto with_location = [&](const std::string& name, const std::string& loc) {
    REQUIRE(loc.size() == location.size());
    std::string m = model;
    for (size_t at = m.find(location); at != std::string::npos; at = m.find(location, at))
      m.replace(at, loc.size(), loc);
    const fs::path dir = tmp / name;
    fs::create_directories(dir);
    write_file(dir / "m.onnx", m);
    return dir;
  };
  const std::string ctx = "tensor 'w': external data location '";

  // In a real sub-folder it loads.
  fs::path ok = with_location("ok", "sub/weights");
  fs::create_directories(ok / "sub");
  write_file(ok / "sub" / "weights", data);
  CHECK(load(ok / "m.onnx").state_dict().at("w").to_vector<float>() == std::vector<float>{1, 2, 3, 4});
  expect_converts(ok / "m.onnx");
  // The same path where sub is a link to a folder elsewhere.
  fs::path linked = with_location("linked", "sub/weights");
  fs::create_directories(tmp / "elsewhere");
  write_file(tmp / "elsewhere" / "weights", data);
  fs::create_symlink(tmp / "elsewhere", linked / "sub");
  expect_refused(linked / "m.onnx", ctx +
                                        "sub/weights' passes through 'sub', which is a symbolic link; only files "
                                        "inside the model's folder are read, never through links");
  // The data file itself a link.
  fs::path file_link = with_location("file_link", "link.weight");
  fs::create_symlink(tmp / "elsewhere" / "weights", file_link / "link.weight");
  expect_refused(file_link / "m.onnx", ctx + "link.weight' is a symbolic link");
  // '..', an absolute path, an empty component.
  fs::path up = with_location("up", "../weights1");
  write_file(tmp / "weights1", data);
  expect_refused(up / "m.onnx", ctx + "../weights1' leaves the model's folder ('..'); only files inside it are read");
  expect_refused(with_location("abs", "/etc/passwd") / "m.onnx",
                 ctx + "/etc/passwd' is an absolute path; only files inside the model's folder are read");
  expect_refused(with_location("empty", "sub//weight") / "m.onnx", ctx + "sub//weight' has an empty path component");
  // A FIFO as the data file: refused at once (opening it would wait for a writer forever).
  fs::path fifo = with_location("fifo", "fifo.weight");
  REQUIRE(::mkfifo((fifo / "fifo.weight").c_str(), 0600) == 0);
  expect_refused(fifo / "m.onnx", ctx + "fifo.weight' is not a regular file (it is a FIFO)");
}

TEST_CASE("sharded indexes: linked shards and indexes are refused, an index naming an index does not recurse",
          "[beneath]") {
  tbtest::TempDir tmp;
  const fs::path d = tmp / "ckpt", outside = tmp / "outside";
  fs::create_directories(d);
  fs::create_directories(outside);
  StateDict sd;
  sd.insert("a", Tensor::from_vector<float>(DType::F32, {4}, {1, 2, 3, 4}));
  sd.insert("b", Tensor::from_vector<float>(DType::F32, {4}, {5, 6, 7, 8}));
  SaveOptions so;
  so.options["shard_size"] = "16";
  save(Checkpoint::from_state_dict(sd), d / "model.safetensors", "", so);
  const fs::path index = d / "model.safetensors.index.json";
  REQUIRE(fs::exists(index));
  expect_converts(index);
  expect_converts(d);
  fs::create_symlink(d, tmp / "alias");  // the user's own link to the folder is fine
  expect_converts(tmp / "alias");

  // An index that names itself, and two that name each other: refused, no recursion.
  const fs::path self = tmp / "self";
  fs::create_directories(self);
  write_file(self / "model.safetensors.index.json", R"({"weight_map": {"a": "model.safetensors.index.json"}})");
  const std::string itself = "' is itself a sharded index; an index names shard files only, never another index";
  expect_refused(self / "model.safetensors.index.json", "shard 'model.safetensors.index.json" + itself);
  expect_refused(self, "shard 'model.safetensors.index.json" + itself);
  const fs::path pair = tmp / "pair";
  fs::create_directories(pair);
  write_file(pair / "a.index.json", R"({"weight_map": {"x": "b.index.json"}})");
  write_file(pair / "b.index.json", R"({"weight_map": {"x": "a.index.json"}})");
  expect_refused(pair / "a.index.json", "shard 'b.index.json" + itself);
  CHECK(contains(error_of<FormatError>([&] { load_sharded(pair / "b.index.json"); }), "shard 'a.index.json" + itself));

  // A shard that links to a file elsewhere.
  const std::string shard2 = "model-00002-of-00002.safetensors";
  replace_with_link(d / shard2, outside);
  expect_refused(index, "shard '" + shard2 + "' " + kLinks);
  expect_refused(d, "shard '" + shard2 + "' " + kLinks);
  fs::remove(d / shard2);
  fs::rename(outside / shard2, d / shard2);
  expect_converts(index);
  // A folder whose index is a link (the folder is the input; what it holds is confined).
  const fs::path linked_index = tmp / "linked_index";
  fs::create_directories(linked_index);
  for (const auto& e : fs::directory_iterator(d)) fs::copy_file(e.path(), linked_index / e.path().filename());
  replace_with_link(linked_index / "model.safetensors.index.json", outside);
  expect_refused(linked_index, "index 'model.safetensors.index.json' " + kLinks);
  // A folder whose model.safetensors is a link.
  const fs::path single = tmp / "single";
  fs::create_directories(single);
  save(Checkpoint::from_state_dict(sd), outside / "model.safetensors");
  fs::create_symlink(outside / "model.safetensors", single / "model.safetensors");
  expect_refused(single, "'model.safetensors' " + kLinks);
}
