// A hostile corpus through the real CLI (`tensorbridge inspect`), each file under an address-space
// cap (4 GiB, outside sanitizer builds) and a CPU-time cap: code-execution pickles in .pt and in a
// numpy object array, deep nesting, memo abuse, shape and size bombs, huge headers, overlapping
// offsets, zip bombs in npz, HDF5 links out of the file and virtual datasets, Git LFS pointers and
// HTML pages. Every one must be refused with exit code 1 and a message naming the file and the
// problem; a crash, a signal, exit 2 (internal error, std::bad_alloc) or a timeout fails the test.
// Files in fixtures/malformed/ are regressions found by the fuzzers (fuzz/, docs/FUZZING.md).
#include "tests/support.h"

#include <fstream>

#include "formats/detail/zip.h"
#include "formats/h5.h"

using namespace tb;
using namespace std::string_literals;  // literals below hold NUL bytes
namespace fs = std::filesystem;

namespace {

const std::string kMarker = "/tmp/tb_malformed_pwned_marker";

struct Refusal {
  int exit_code;
  std::string output;
  double seconds;
};

// `tensorbridge inspect file` under ulimit -v (4 GiB) and ulimit -t (20 s of CPU).
Refusal inspect_capped(const fs::path& file) {
#if defined(__SANITIZE_ADDRESS__)
  const std::string caps = "ulimit -t 20";  // ASan reserves terabytes of shadow address space
#else
  const std::string caps = "ulimit -v 4194304 && ulimit -t 20";
#endif
  const double cpu0 = tbtest::children_cpu_seconds();  // CPU time: a busy machine stretches the wall clock
  auto r = tbtest::run({"/bin/sh", "-c", caps + " && exec \"$0\" inspect \"$1\"", TB_CLI_PATH, file.string()});
  const double s = tbtest::children_cpu_seconds() - cpu0;
  return {r.exit_code, r.output, s};
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// Checks one hostile file: exit 1, the file named, every expected phrase present, no crash.
void expect_refused(const fs::path& file, const std::vector<std::string>& phrases) {
  Refusal r = inspect_capped(file);
  INFO(file.filename().string() << " -> exit " << r.exit_code << " in " << r.seconds << " s:\n" << r.output);
  CHECK(r.exit_code == 1);
  CHECK(r.output.find(file.filename().string()) != std::string::npos);
  for (const auto& p : phrases) CHECK(r.output.find(p) != std::string::npos);
  CHECK(r.output.find("internal error") == std::string::npos);
  CHECK(r.seconds < 20.0);
}

std::string u32le(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xFF);
  return s;
}
std::string u64le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xFF);
  return s;
}
std::string binunicode(const std::string& s) { return "X" + u32le(uint32_t(s.size())) + s; }

// A torch.save zip archive whose data.pkl is the given pickle.
std::string pt_archive(const std::string& pkl) {
  MemoryWriter w;
  {
    zip::ZipWriter z(w);
    z.add_stored("archive/data.pkl", pkl);
    z.add_stored("archive/version", std::string_view("3\n"));
    z.finish();
  }
  return std::string(w.bytes().begin(), w.bytes().end());
}

// .npy version 1 file: magic, header dict padded to 64 bytes, then data.
std::string npy(const std::string& dict, const std::string& data, int version = 1) {
  std::string h = dict;
  size_t pre = version == 1 ? 10 : 12;
  while ((pre + h.size() + 1) % 64) h += ' ';
  h += '\n';
  std::string out = "\x93NUMPY";
  out += char(version);
  out += '\0';
  if (version == 1) {
    out += char(h.size() & 0xFF);
    out += char(h.size() >> 8);
  } else {
    out += u32le(uint32_t(h.size()));
  }
  return out + h + data;
}

std::string safetensors(const std::string& json, const std::string& data) { return u64le(json.size()) + json + data; }

}  // namespace

TEST_CASE("code-execution pickles in .pt archives and numpy object arrays are refused; nothing runs", "[malformed]") {
  fs::remove(kMarker);
  const std::string cmd = "touch " + kMarker;
  tbtest::TempDir dir;
  struct Case {
    const char* file;
    std::string pkl;
    std::vector<std::string> names;
  };
  std::vector<Case> cases = {
      {"global_reduce_os_system.pt",
       "\x80\x02"
       "cos\nsystem\n" +
           binunicode(cmd) + "\x85R.",
       {"os.system"}},
      {"global_reduce_eval.pt",
       "\x80\x02"
       "cbuiltins\neval\n" +
           binunicode("__import__('os').system('" + cmd + "')") + "\x85R.",
       {"builtins.eval"}},
      {"global_reduce_exec.pt",
       "\x80\x02"
       "c__builtin__\nexec\n" +
           binunicode("import os") + "\x85R.",
       {"exec"}},
      {"global_reduce_subprocess.pt",
       "\x80\x02"
       "csubprocess\ncheck_output\n" +
           binunicode(cmd) + "\x85R.",
       {"subprocess.check_output"}},
      {"stack_global.pt", "\x80\x04\x8c\x02os\x8c\x06system\x93" + binunicode(cmd) + "\x85R.", {"os.system"}},
      {"inst.pt", "(S'" + cmd + "'\nios\nsystem\n.", {"os.system"}},
      {"obj.pt", "(cos\nsystem\nS'" + cmd + "'\no.", {"os.system"}},
      {"newobj.pt",
       "\x80\x02"
       "csubprocess\nPopen\n" +
           binunicode(cmd) + "\x85\x81.",
       {"subprocess.Popen"}},
      // A state dict whose value is the payload, next to a real-looking key.
      {"state_dict_payload.pt",
       "\x80\x02}(X\x01\x00\x00\x00w"
       "cposix\nsystem\n"s +
           binunicode(cmd) + "\x85Ru.",
       {"posix.system"}},
  };
  for (const auto& c : cases) {
    write_file(dir / c.file, pt_archive(c.pkl));
    expect_refused(dir / c.file, c.names);
  }
  // numpy object array (dtype |O) whose pickled payload calls os.system.
  write_file(dir / "object_payload.npy", npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
                                             "\x80\x02"
                                             "cos\nsystem\n" +
                                                 binunicode(cmd) + "\x85R."));
  expect_refused(dir / "object_payload.npy", {"os.system"});
  CHECK(!fs::exists(kMarker));
}

TEST_CASE("deep nesting, recursive structures and memo abuse in pickles are refused", "[malformed]") {
  tbtest::TempDir dir;
  struct Case {
    const char* file;
    std::string pkl;
  };
  std::vector<Case> cases = {
      {"deep_marks.pt", "\x80\x02" + std::string(200000, '(') + "."},
      {"deep_lists.pt", "\x80\x02" + std::string(100000, ']') + std::string(99999, 'a') + "."},
      {"deep_dicts.pt",
       [] {
         std::string s = "\x80\x02";
         for (int i = 0; i < 50000; ++i) s += "}X\x01\x00\x00\x00k"s;
         s += "N";
         for (int i = 0; i < 50000; ++i) s += "s";
         return s + ".";
       }()},
      {"memo_huge_index.pt",
       "\x80\x02"
       "Nr\xff\xff\xff\xff"
       "j\xff\xff\xff\xff."},
      {"memo_missing.pt",
       "\x80\x02"
       "j\x10\x00\x00\x00."s},
      {"memo_many.pt",
       [] {  // a memo entry per byte pair: 4M entries of None
         std::string s = "\x80\x02N";
         for (uint32_t i = 0; i < 400000; ++i) s += "r" + u32le(i * 9973u);
         return s + ".";
       }()},
      {"self_reference.pt", "\x80\x02]q\x00h\x00a."s},
      {"dict_cycle.pt", "\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s."s},
  };
  for (const auto& c : cases) {
    write_file(dir / c.file, pt_archive(c.pkl));
    Refusal r = inspect_capped(dir / c.file);
    INFO(c.file << " -> exit " << r.exit_code << " in " << r.seconds << " s:\n" << r.output);
    // Either refused cleanly or (memo_many: a legitimate None) shown; never a crash or exit 2.
    // memo_many is a legitimate (if silly) pickle of None; every other one is refused.
    CHECK(r.exit_code == (std::string(c.file) == "memo_many.pt" ? 0 : 1));
    if (r.exit_code == 1) CHECK(r.output.find(c.file) != std::string::npos);
    CHECK(r.seconds < 20.0);
  }
}

TEST_CASE("shape and size bombs, huge headers and overlapping offsets are refused", "[malformed]") {
  tbtest::TempDir dir;
  struct Case {
    const char* file;
    std::string bytes;
    std::vector<std::string> phrases;
  };
  const std::string f4 = "{'descr': '<f4', 'fortran_order': False, ";
  std::vector<Case> cases = {
      {"shape_bomb.npy", npy(f4 + "'shape': (100000000000,), }", std::string(16, '\0')), {}},
      {"shape_overflow.npy", npy(f4 + "'shape': (4294967296, 4294967296, 4294967296), }", std::string(16, '\0')), {}},
      {"negative_dim.npy", npy(f4 + "'shape': (-1, 4), }", std::string(16, '\0')), {}},
      {"huge_header_v2.npy", "\x93NUMPY\x02\x00\xff\xff\xff\xff{'descr'"s, {}},
      {"shape_bomb.safetensors",
       safetensors(R"({"a":{"dtype":"F32","shape":[1000000000000],"data_offsets":[0,16]}})", std::string(16, '\0')),
       {"'a'"}},
      {"shape_overflow.safetensors",
       safetensors(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}})",
                   std::string(16, '\0')),
       {"'a'"}},
      {"huge_header.safetensors", u64le(uint64_t(1) << 62) + "{}", {}},
      {"header_past_end.safetensors",
       u64le(100000000) + R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
       {}},
      {"overlapping.safetensors",
       safetensors(
           R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
           std::string(24, '\0')),
       {"overlapping"}},
      {"offsets_past_end.safetensors",
       safetensors(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0')),
       {}},
      {"deep_json.safetensors", safetensors(std::string(100000, '[') + std::string(100000, ']'), ""), {}},
  };
  for (const auto& c : cases) {
    write_file(dir / c.file, c.bytes);
    expect_refused(dir / c.file, c.phrases);
  }
}

TEST_CASE("zip bombs in .npz are refused before inflating", "[malformed]") {
  tbtest::TempDir dir;
  // 8 MiB of zeros deflated (about 8 KB), as a valid .npz member.
  std::string zeros_npy =
      npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2097152,), }", std::string(8u << 20, '\0'));
  MemoryWriter w;
  {
    zip::ZipWriter z(w);
    z.add_deflated("a.npy", zeros_npy);
    z.finish();
  }
  const std::string good(w.bytes().begin(), w.bytes().end());
  size_t cd = good.rfind("PK\x01\x02");
  REQUIRE(cd != std::string::npos);
  REQUIRE(good.compare(0, 4, "PK\x03\x04") == 0);
  auto patch32 = [](std::string s, size_t at, uint32_t v) {
    s.replace(at, 4, u32le(v));
    return s;
  };
  // (a) the directory claims 4 GiB from 8 KB: a ratio no deflate stream reaches.
  std::string claim_huge = patch32(patch32(good, cd + 24, 0xFFFFFFF0u), 22, 0xFFFFFFF0u);
  write_file(dir / "ratio_bomb.npz", claim_huge);
  expect_refused(dir / "ratio_bomb.npz", {"zip bomb"});
  // (b) the directory claims 200 bytes, the stream inflates to 8 MiB: stopped at the claim.
  std::string claim_small = patch32(patch32(good, cd + 24, 200), 22, 200);
  write_file(dir / "size_lie.npz", claim_small);
  expect_refused(dir / "size_lie.npz", {"a.npy"});
  // (c) overlapping entries (Fifield's non-recursive bomb): 300 central-directory records pointing
  // at the same deflated member, 2.4 GiB in all once inflated.
  {
    uint16_t name_len = uint16_t(uint8_t(good[cd + 28]) | (uint8_t(good[cd + 29]) << 8));
    uint16_t extra_len = uint16_t(uint8_t(good[cd + 30]) | (uint8_t(good[cd + 31]) << 8));
    std::string rec = good.substr(cd, 46 + name_len + extra_len);
    REQUIRE(name_len == 5);
    std::string dir_bytes;
    const int n = 300;
    for (int i = 0; i < n; ++i) {
      std::string r = rec;
      std::string nm = "b" + std::to_string(1000 + i).substr(1) + ".npy";  // b000.npy ... 8 chars
      r.replace(28, 2, std::string{char(nm.size()), '\0'});
      r.replace(46, name_len, nm);
      dir_bytes += r;
    }
    std::string body = good.substr(0, cd);
    std::string eocd = "PK\x05\x06" + std::string(4, '\0');
    eocd += std::string{char(n & 0xFF), char(n >> 8), char(n & 0xFF), char(n >> 8)};
    eocd += u32le(uint32_t(dir_bytes.size())) + u32le(uint32_t(body.size())) + std::string(2, '\0');
    write_file(dir / "overlap_bomb.npz", body + dir_bytes + eocd);
    expect_refused(dir / "overlap_bomb.npz", {});
  }
  // The same bomb made by Python (fixtures/gen_malformed.py): the zip reader names the overlap.
  auto bomb = tbtest::fixture("malformed/zip_overlap_bomb.npz");
  try {
    zip::ZipReader z(open_file(bomb));
    FAIL("overlapping members accepted");
  } catch (const FormatError& e) {
    std::string m = e.what();
    INFO(m);
    CHECK(m.find("zip_overlap_bomb.npz") != std::string::npos);
    CHECK(m.find("overlap") != std::string::npos);
    CHECK(m.find("zip bomb") != std::string::npos);
  }
  expect_refused(bomb, {});
}

TEST_CASE("HDF5 links out of the file, virtual datasets and external storage are refused", "[malformed][needs_hdf5]") {
  expect_refused(tbtest::fixture("h5_extra/hostile_external_link.h5"), {"external link"});
  expect_refused(tbtest::fixture("h5_extra/hostile_virtual.h5"), {"virtual dataset"});
  expect_refused(tbtest::fixture("h5_extra/hostile_external_storage.h5"), {"external raw files"});
  expect_refused(tbtest::fixture("h5_extra/hostile_size_bomb.h5"), {});
  // Found by fuzz_h5: a global heap object of index 0 and size 0 sends HDF5 1.10 into an endless
  // loop (H5HG__cache_heap_deserialize); refused before HDF5 sees the file.
  expect_refused(tbtest::fixture("malformed/h5_global_heap_zero_object.h5"), {"global heap collection", "no progress"});
  // Found by fuzz_h5 (LeakSanitizer, docs/FUZZING.md finding 4): an object header that fails its
  // checksum; HDF5 1.10.8 leaks 424 bytes on that error path (not ours to free), the file is refused.
  expect_refused(tbtest::fixture("malformed/h5_object_header_leak.h5"), {"cannot open '/virtual'", "checksum"});
}

// Loads an HDF5 file in this process, by path and as an in-memory file image (how fuzz_h5 hands it
// to HDF5), and requires a FormatError naming the file and containing `needle` both ways.
static void expect_h5_refused_in_process(const fs::path& file, const std::string& needle) {
  std::ifstream in(file, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Source image;
  image.reader = memory_reader(bytes, file.filename().string());
  for (const Source& src : {Source::from_path(file), image}) {
    try {
      load_h5(src);
      FAIL("a hostile HDF5 file was accepted: " + file.string());
    } catch (const FormatError& e) {
      std::string m = e.what();
      INFO(m);
      CHECK(m.find(file.filename().string()) != std::string::npos);
      CHECK(m.find(needle) != std::string::npos);
    }
  }
}

TEST_CASE("HDF5: a crash inside the HDF5 library is contained in the probe process and refused",
          "[malformed][needs_hdf5]") {
  // Found by fuzz_h5 (docs/FUZZING.md finding 5): a variable-length string attribute whose global
  // heap object index lies past its collection; HDF5 1.10.8's H5HG_read indexes its object table
  // with it unchecked (SEGV, in the release CLI too). The loader reads every file in a forked probe
  // process first (formats/h5_probe.cpp probe_in_child) and refuses the file when HDF5 dies there.
  fs::path file = tbtest::fixture("malformed/h5_global_heap_bad_index.h5");
  expect_refused(file, {"the HDF5 library", "reading this file's structure in a probe process", "hostile"});
  expect_h5_refused_in_process(file, "probe process");
}

TEST_CASE("HDF5: a variable-length string claiming gigabytes is refused without allocating them",
          "[malformed][needs_hdf5]") {
  // Found by fuzz_h5 (docs/FUZZING.md finding 6): a 49 KB file whose variable-length string
  // attribute claims a 3 GB sequence; HDF5 1.10.8 allocates (and touches) the claimed length
  // for its conversion buffer: 3 GB of RSS and 8-11 s before the probe. The probe process runs
  // under an address-space limit, so the allocation fails there and its refusal is reported.
  // (Under ASan the allocator aborts the probe instead of returning NULL: refused as a crash.)
  fs::path file = tbtest::fixture("malformed/h5_vlen_length_bomb.h5");
  expect_refused(file, {});
  Refusal r = inspect_capped(file);
  INFO(r.output);
  CHECK(r.seconds < 5.0);
  CHECK((r.output.find("memory allocation failed") != std::string::npos ||
         r.output.find("in a probe process") != std::string::npos));
}

TEST_CASE("HDF5: a damaged attribute message is refused, not a crash inside HDF5's attribute table",
          "[malformed][needs_hdf5]") {
  // Found by fuzz_h5 (was fuzz/known/h5_attr_table_null_close.h5, docs/FUZZING.md finding 3): an
  // attribute message of the root group whose name length disagrees with its name. HDF5 1.10.8's
  // H5Aiterate2 copies the attributes into a table, fails on that message, and its cleanup closes
  // table slots it never filled (SEGV in H5A__close under ASan). The loader checks every attribute
  // message first through a walk that fails cleanly (formats/h5_read.cpp check_attr_messages).
  fs::path file = tbtest::fixture("malformed/h5_attr_table_null_close.h5");
  expect_refused(file, {"cannot list the attributes of '/'", "damaged attribute message",
                        "attribute name has different length than stored length"});
  expect_h5_refused_in_process(file, "damaged attribute message");
}

TEST_CASE("Git LFS pointers and HTML pages saved under weight-file names are named as such", "[malformed]") {
  tbtest::TempDir dir;
  write_file(dir / "model.safetensors",
             "version https://git-lfs.github.com/spec/v1\n"
             "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 548105171\n");
  expect_refused(dir / "model.safetensors", {"Git LFS pointer"});
  write_file(dir / "pytorch_model.bin",
             "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Redirecting...</body></html>\n");
  expect_refused(dir / "pytorch_model.bin", {"HTML page"});
  write_file(dir / "empty.pt", "");
  expect_refused(dir / "empty.pt", {});
}

TEST_CASE("fuzzer regressions in fixtures/malformed/ are refused cleanly", "[malformed]") {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(tbtest::fixture("malformed"))) {
    std::string name = e.path().filename().string();
    if (name.rfind("pickle_", 0) == 0) continue;  // raw pickles of tests/pickle_test.cpp, not weight files
    ++n;
    expect_refused(e.path(), {});
  }
  INFO(n << " regression files");
  SUCCEED();
}
