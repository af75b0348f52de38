// Zip container: our writer read by Python's zipfile (CRC checked), Python/numpy zips read by us,
// alignment, ZIP64, streaming members, and hostile archives refused.
#include "tests/support.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "formats/detail/zip.h"
#include "tensor/io.h"

using namespace tb;

namespace {

std::string pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    s[i] = char((i % 7 == 0) ? 0 : (x >> 24));
  }
  return s;
}

std::vector<uint8_t> build_zip(const zip::WriteOptions& opts) {
  MemoryWriter mw;
  zip::ZipWriter zw(mw, opts);
  zw.add_stored("archive/data.pkl", pattern(100, 1));
  std::string big = pattern(5000, 2);
  zw.add_stored("archive/data/0", big.size(), [&](Writer& w) {
    w.write(big.data(), 1234);
    w.write(big.data() + 1234, big.size() - 1234);
  });
  zw.add_deflated("layer/weight.npy", std::string(20000, 'a') + pattern(300, 3));
  std::string z = pattern(70000, 4);
  zw.add_deflated("streamed.bin", z.size(), [&](Writer& w) { w.write(z.data(), z.size()); });
  zw.add_stored("empty", std::string());
  zw.finish();
  return mw.bytes();
}

void check_our_reader(const std::vector<uint8_t>& bytes, uint64_t align) {
  zip::ZipReader zr(memory_reader(bytes, "t.zip"));
  REQUIRE(zr.entries().size() == 5);
  CHECK(zr.read_string(zr.at("archive/data.pkl")) == pattern(100, 1));
  CHECK(zr.read_string(zr.at("archive/data/0")) == pattern(5000, 2));
  CHECK(zr.read_string(zr.at("layer/weight.npy")) == std::string(20000, 'a') + pattern(300, 3));
  CHECK(zr.read_string(zr.at("streamed.bin")) == pattern(70000, 4));
  CHECK(zr.read_string(zr.at("empty")).empty());
  CHECK(zr.at("layer/weight.npy").method == 8);
  CHECK(zr.at("archive/data/0").method == 0);
  if (align > 1)
    for (const auto& e : zr.entries()) CHECK(e.data_offset % align == 0);
  CHECK_THROWS_AS(zr.at("missing"), KeyError);
}

const char* kPyCheck = R"(
import sys, zipfile, hashlib
with zipfile.ZipFile(sys.argv[1]) as z:
    assert z.testzip() is None
    for i in z.infolist():
        print(i.filename, i.compress_type, i.file_size, hashlib.sha256(z.read(i)).hexdigest()[:16])
)";

}  // namespace

TEST_CASE("our zips read back by us and by Python zipfile", "[zip]") {
  tbtest::TempDir dir;
  for (bool z64 : {false, true}) {
    zip::WriteOptions o;
    o.align = 64;
    o.force_zip64 = z64;
    auto bytes = build_zip(o);
    check_our_reader(bytes, 64);
    CHECK(zip::ZipReader(memory_reader(bytes)).zip64() == z64);
    auto path = dir / (z64 ? "z64.zip" : "plain.zip");
    {
      AtomicFileWriter w(path);
      w.write(bytes.data(), bytes.size());
      w.commit();
    }
    auto r = tbtest::python(tbtest::Peer::Torch, kPyCheck, {path.string()});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(r.output.find("archive/data.pkl 0 100 ") != std::string::npos);
    CHECK(r.output.find("archive/data/0 0 5000 ") != std::string::npos);
    CHECK(r.output.find("layer/weight.npy 8 20300 ") != std::string::npos);
    CHECK(r.output.find("streamed.bin 8 70000 ") != std::string::npos);
    CHECK(r.output.find("empty 0 0 ") != std::string::npos);
  }
}

TEST_CASE("the first member is named by its local header alone", "[zip]") {
  for (uint64_t align : {uint64_t(0), uint64_t(64)}) {
    zip::WriteOptions opts;
    opts.align = align;
    const std::vector<uint8_t> bytes = build_zip(opts);
    auto first = zip::first_member(*memory_reader(bytes, "t.zip"));
    REQUIRE(first);
    CHECK(first->name == "archive/data.pkl");
    CHECK(first->method == 0);
    CHECK(first->data_offset == zip::ZipReader(memory_reader(bytes, "t.zip")).at("archive/data.pkl").data_offset);
    CHECK(zip::starts_with_member(*memory_reader(bytes, "t.zip")));
    // A name longer than the limit, a truncated name and a non-zip input give nothing.
    CHECK_FALSE(zip::first_member(*memory_reader(bytes, "t.zip"), 8));
    CHECK_FALSE(zip::first_member(*memory_reader(std::vector<uint8_t>(bytes.begin(), bytes.begin() + 40), "t.zip")));
  }
  const std::vector<uint8_t> not_zip(64, 'x');
  CHECK_FALSE(zip::first_member(*memory_reader(not_zip, "x.bin")));
  CHECK_FALSE(zip::starts_with_member(*memory_reader(not_zip, "x.bin")));
}

TEST_CASE("stored members are zero-copy views of a mapped file", "[zip]") {
  tbtest::TempDir dir;
  auto bytes = build_zip({});
  auto path = dir / "m.zip";
  {
    AtomicFileWriter w(path);
    w.write(bytes.data(), bytes.size());
    w.commit();
  }
  auto file = open_file(path, true);
  zip::ZipReader zr(file);
  auto m = zr.open(zr.at("archive/data/0"));
  auto s = m->map(0, m->size());
  REQUIRE(s);
  CHECK(s->kind() == Storage::Kind::Mapped);
  CHECK(std::memcmp(s->data(), pattern(5000, 2).data(), 5000) == 0);
  CHECK(m->label() == path.string() + ":archive/data/0");
}

TEST_CASE("zips written by Python (stored, deflated, ZIP64 extras, data descriptors) read by us", "[zip]") {
  tbtest::TempDir dir;
  auto path = dir / "py.zip";
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w') as z:
    z.writestr('a.txt', b'hello' * 100, compress_type=zipfile.ZIP_STORED)
    z.writestr('b/c.bin', bytes(range(256)) * 50, compress_type=zipfile.ZIP_DEFLATED)
    with z.open('forced64', 'w', force_zip64=True) as f:
        f.write(b'xyz' * 1000)
# a non-seekable stream produces data descriptors
import io
class NoSeek(io.RawIOBase):
    def __init__(self, f): self.f = f
    def writable(self): return True
    def write(self, b): return self.f.write(b)
with open(sys.argv[2], 'wb') as raw:
    with zipfile.ZipFile(NoSeek(raw), 'w') as z:
        z.writestr('d.bin', b'q' * 3000, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr('e.bin', b'r' * 10)
print('ok')
)",
                          {path.string(), (dir / "stream.zip").string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  zip::ZipReader zr(open_file(path));
  CHECK(zr.read_string(zr.at("a.txt")).size() == 500);
  std::string expect;
  for (int k = 0; k < 50; ++k)
    for (int i = 0; i < 256; ++i) expect.push_back(char(i));
  CHECK(zr.read_string(zr.at("b/c.bin")) == expect);
  std::string xyz;
  for (int i = 0; i < 1000; ++i) xyz += "xyz";
  CHECK(zr.read_string(zr.at("forced64")) == xyz);
  zip::ZipReader zs(open_file(dir / "stream.zip"));
  CHECK(zs.at("d.bin").flags & 8);
  CHECK(zs.read_string(zs.at("d.bin")) == std::string(3000, 'q'));
  CHECK(zs.read_string(zs.at("e.bin")) == std::string(10, 'r'));
}

TEST_CASE("numpy npz fixtures parse (stored and deflated members)", "[zip]") {
  for (const char* f : {"numpy/arrays.npz", "numpy/arrays_compressed.npz"}) {
    zip::ZipReader zr(open_file(tbtest::fixture(f)));
    REQUIRE(!zr.entries().empty());
    for (const auto& e : zr.entries()) {
      auto m = zr.open(e);
      CHECK(m->size() == e.uncompressed_size);
      CHECK(m->read_string(0, 6) == "\x93NUMPY");
    }
  }
}

namespace {
template <class E>
std::string error_of(const std::vector<uint8_t>& bytes, bool open_all = true) {
  try {
    zip::ZipReader zr(memory_reader(bytes, "bad.zip"));
    if (open_all)
      for (const auto& e : zr.entries()) zr.read(e);
  } catch (const E& e) {
    return e.what();
  }
  FAIL("expected an error");
  return {};
}
size_t find_sig(const std::vector<uint8_t>& b, uint32_t sig, size_t from = 0) {
  for (size_t i = from; i + 4 <= b.size(); ++i)
    if (uint32_t(b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (uint32_t(b[i + 3]) << 24)) == sig) return i;
  return std::string::npos;
}
void put32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = uint8_t(v >> (8 * i));
}
}  // namespace

TEST_CASE("hostile zips are refused with clear messages", "[zip]") {
  auto good = build_zip({});
  // truncated: no end record
  std::vector<uint8_t> cut(good.begin(), good.begin() + long(good.size() / 2));
  CHECK(error_of<FormatError>(cut).find("no end-of-central-directory") != std::string::npos);
  CHECK(error_of<FormatError>({'P', 'K', 3, 4}).find("too small") != std::string::npos);

  // corrupted deflated data: CRC mismatch or corrupt stream
  {
    zip::ZipReader zr(memory_reader(good));
    auto bad = good;
    const auto& e = zr.at("streamed.bin");
    bad[size_t(e.data_offset + e.compressed_size / 2)] ^= 0x55;
    std::string msg = error_of<FormatError>(bad);
    CHECK((msg.find("CRC-32") != std::string::npos || msg.find("corrupt") != std::string::npos ||
           msg.find("inflates") != std::string::npos));
  }
  // zip bomb claim: declared uncompressed size far above the ratio
  {
    zip::ZipReader zr(memory_reader(good));
    size_t cd = find_sig(good, 0x02014b50);
    // third central record = layer/weight.npy (deflated)
    size_t c3 = find_sig(good, 0x02014b50, find_sig(good, 0x02014b50, cd + 4) + 4);
    auto bad = good;
    put32(bad, c3 + 24, 0x7FFFFFFF);
    CHECK(error_of<FormatError>(bad).find("zip bomb") != std::string::npos);
    zip::ReadOptions small;
    small.max_inflated_size = 1000;
    zip::ZipReader zr2(memory_reader(good), small);
    CHECK_THROWS_AS(zr2.read(zr2.at("layer/weight.npy")), UnsupportedError);
  }
  // declared size smaller than the stream
  {
    size_t cd = find_sig(good, 0x02014b50);
    size_t c3 = find_sig(good, 0x02014b50, find_sig(good, 0x02014b50, cd + 4) + 4);
    auto bad = good;
    put32(bad, c3 + 24, 20000);
    CHECK(error_of<FormatError>(bad).find("more than the 20000 bytes") != std::string::npos);
  }
  // central directory offset beyond the file
  {
    auto bad = good;
    size_t eocd = find_sig(bad, 0x06054b50);
    put32(bad, eocd + 16, 0x7FFFFFF0);
    CHECK(error_of<FormatError>(bad).find("central directory") != std::string::npos);
  }
  // entry count claims more records than fit
  {
    auto bad = good;
    size_t eocd = find_sig(bad, 0x06054b50);
    bad[eocd + 10] = 0xFF;
    bad[eocd + 11] = 0x7F;
    CHECK(error_of<FormatError>(bad).find("entries") != std::string::npos);
  }
  // NUL in a name
  {
    auto bad = good;
    size_t cd = find_sig(bad, 0x02014b50);
    bad[cd + 46 + 2] = 0;
    CHECK(error_of<FormatError>(bad).find("NUL") != std::string::npos);
  }
  // duplicate names
  {
    MemoryWriter mw;
    zip::ZipWriter zw(mw);
    zw.add_stored("a", std::string("1"));
    CHECK_THROWS_AS(zw.add_stored("a", std::string("2")), KeyError);
  }
  // local header missing where the central directory points
  {
    auto bad = good;
    bad[0] = 'X';
    CHECK(error_of<FormatError>(bad).find("local header") != std::string::npos);
  }
  // unsupported method
  {
    auto bad = good;
    size_t cd = find_sig(bad, 0x02014b50);
    bad[cd + 10] = 12;            // bzip2
    bad[cd + 20] = bad[cd + 24];  // keep sizes as they are (stored entry)
    std::string msg = error_of<UnsupportedError>(bad);
    CHECK(msg.find("bzip2") != std::string::npos);
  }
}

namespace {
/** Writes small chunks to a file and leaves holes for long runs of zeros (a sparse file). */
class SparseFileWriter : public Writer {
 public:
  explicit SparseFileWriter(const std::filesystem::path& p) : f_(std::fopen(p.c_str(), "wb")) { REQUIRE(f_); }
  ~SparseFileWriter() override { close(); }
  using Writer::write;
  void write(const void* data, size_t n) override {
    static const std::vector<uint8_t> zeros(1 << 20);
    const auto* p = static_cast<const uint8_t*>(data);
    bool zero = n >= 4096 && n <= zeros.size() && std::memcmp(p, zeros.data(), n) == 0;
    if (!zero) {
      REQUIRE(std::fseek(f_, long(pos_), SEEK_SET) == 0);
      REQUIRE(std::fwrite(p, 1, n, f_) == n);
    }
    pos_ += n;
  }
  uint64_t tell() const override { return pos_; }
  void close() {
    if (!f_) return;
    std::fflush(f_);
    REQUIRE(::ftruncate(fileno(f_), off_t(pos_)) == 0);
    std::fclose(f_);
    f_ = nullptr;
  }

 private:
  FILE* f_;
  uint64_t pos_ = 0;
};
}  // namespace

TEST_CASE("members past 4 GiB use ZIP64 sizes and offsets (sparse file)", "[zip]") {
  tbtest::TempDir dir;
  auto path = dir / "big.zip";
  const uint64_t big = (uint64_t(1) << 32) + 100;
  {
    SparseFileWriter w(path);
    zip::ZipWriter zw(w);
    zw.add_stored("a", std::string("first"));
    zw.add_stored("big", big, [&](Writer& out) {
      static const std::vector<uint8_t> zeros(1 << 20);
      for (uint64_t left = big; left > 0;) {
        size_t k = size_t(std::min<uint64_t>(left, zeros.size()));
        out.write(zeros.data(), k);
        left -= k;
      }
    });
    zw.add_stored("c", std::string("after 4 GiB"));
    zw.finish();
    w.close();
  }
  zip::ZipReader zr(open_file(path));
  CHECK(zr.zip64());
  CHECK(zr.at("big").uncompressed_size == big);
  CHECK(zr.at("c").local_header_offset > (uint64_t(1) << 32));
  CHECK(zr.read_string(zr.at("c")) == "after 4 GiB");
  CHECK(zr.read_string(zr.at("a")) == "first");
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
print([(i.filename, i.file_size, i.header_offset > 2**32) for i in z.infolist()], z.read('c'))
)",
                          {path.string()});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("('big', 4294967396, False), ('c', 11, True)] b'after 4 GiB'") != std::string::npos);
}
