// Which memo entries a pickle reads back: a pass over the opcodes before the VM runs (see
// pickle_vm.h, MemoReads).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "formats/detail/pickle_vm.h"

namespace tb::pickle {

namespace {

// The opcodes in order, each with the bytes of its argument; nothing is built. Reads through a
// window like the VM does when the input is not in memory.
class OpcodeWalker {
 public:
  OpcodeWalker(const Reader& r, uint64_t offset, uint64_t size)
      : r_(r), direct_(r.contiguous_bytes()), pos_(offset), end_(offset + size) {}

  // False at the end of the range (the VM reports the truncation).
  bool has(uint64_t n) const { return n <= end_ - pos_; }
  uint8_t u8() {
    if (direct_) return direct_[pos_++];
    uint8_t b = 0;
    get(&b, 1);
    return b;
  }
  uint64_t uint_le(size_t n) {
    uint8_t buf[8] = {};
    const uint8_t* b = buf;
    if (direct_) {
      b = direct_ + pos_;
      pos_ += n;
    } else {
      get(buf, n);
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= uint64_t(b[i]) << (8 * i);
    return v;
  }
  void skip(uint64_t n) { pos_ += n; }  // caller checked has(n)
  // The text up to the next '\n' (which is consumed), without a trailing '\r'; false when there is none.
  bool line(std::string& s) {
    s.clear();
    while (pos_ < end_) {
      const char c = char(u8());
      if (c == '\n') {
        if (!s.empty() && s.back() == '\r') s.pop_back();
        return true;
      }
      if (s.size() >= (1u << 20)) return false;  // the VM refuses longer lines
      s.push_back(c);
    }
    return false;
  }

 private:
  static constexpr uint64_t kWindow = 64 * 1024;
  void get(uint8_t* dst, size_t n) {  // caller checked has(n)
    if (direct_) {
      std::memcpy(dst, direct_ + pos_, n);
    } else {
      if (pos_ < win_pos_ || pos_ + n > win_pos_ + win_.size()) {
        win_.resize(size_t(std::min(kWindow, end_ - pos_)));
        r_.read_at(pos_, win_.data(), win_.size());
        win_pos_ = pos_;
      }
      std::memcpy(dst, win_.data() + (pos_ - win_pos_), n);
    }
    pos_ += n;
  }

  const Reader& r_;
  const uint8_t* direct_;
  uint64_t pos_, end_;
  std::vector<uint8_t> win_;
  uint64_t win_pos_ = 0;
};

// How each opcode's argument is laid out: kFixed + n (n bytes), kPrefix + n (an n-byte length, then
// that many bytes), kLines + n (n text lines), or kStop (STOP, and opcodes the VM refuses).
constexpr uint8_t kStop = 0, kFixed = 0x10, kPrefix = 0x20, kLines = 0x40;
struct Layouts {
  uint8_t of[256] = {};  // kStop unless set
  constexpr void set(std::initializer_list<int> ops, int layout) {
    for (int op : ops) of[op] = uint8_t(layout);
  }
  constexpr Layouts() {
    set({'(',  '0',  '1',  '2', 'N', 0x88, 0x89, ')',  't', 0x85, 0x86, 0x87, ']', 'l', '}', 'd',
         0x8f, 0x90, 0x91, 'a', 'e', 's',  'u',  0x93, 'o', 0x81, 0x92, 'R',  'b', 'Q', 0x94},
        kFixed + 0);
    set({'K', 'q', 'h', 0x80}, kFixed + 1);  // BININT1, BINPUT, BINGET, PROTO
    set({'M'}, kFixed + 2);                  // BININT2
    set({'J', 'r', 'j'}, kFixed + 4);        // BININT, LONG_BINPUT, LONG_BINGET
    set({0x95, 'G'}, kFixed + 8);            // FRAME, BINFLOAT
    // LONG1, SHORT_BINUNICODE, SHORT_BINBYTES, SHORT_BINSTRING; LONG4, BINUNICODE, BINBYTES,
    // BINSTRING; BINUNICODE8, BINBYTES8, BYTEARRAY8
    set({0x8a, 0x8c, 'C', 'U'}, kPrefix + 1);
    set({0x8b, 'X', 'B', 'T'}, kPrefix + 4);
    set({0x8d, 0x8e, 0x96}, kPrefix + 8);
    set({'I', 'L', 'F', 'S', 'V', 'p', 'g', 'P'}, kLines + 1);  // protocol 0 text
    set({'c', 'i'}, kLines + 2);                                // GLOBAL, INST
  }
};
constexpr Layouts kLayouts;

}  // namespace

MemoReads MemoReads::scan(const Reader& r, uint64_t offset, uint64_t size) {
  MemoReads m;
  m.all_ = false;
  OpcodeWalker w(r, offset, size);
  // An index beyond what the pickle could have stored densely goes to the sorted list (rare).
  const uint64_t dense_limit = size + 1024;
  std::string s;
  auto add = [&](uint64_t idx) {
    if (idx < dense_limit) {
      if (idx >= m.dense_.size()) m.dense_.resize(std::max(size_t(idx) + 1, 2 * m.dense_.size()));
      m.dense_[size_t(idx)] = 1;
    } else {
      m.far_.push_back(idx);
    }
  };
  // Stops at STOP, at the end of the range and at whatever the walker cannot decode: the VM
  // refuses the pickle at that same opcode, so no read after it can happen.
  while (w.has(1)) {
    const uint8_t op = w.u8(), layout = kLayouts.of[op];
    const uint8_t n = layout & 0x0f;
    if (layout & kFixed) {
      if (!w.has(n)) break;
      if (op == 'h' || op == 'j')
        add(w.uint_le(n));
      else
        w.skip(n);
    } else if (layout & kPrefix) {
      if (!w.has(n)) break;
      const uint64_t len = w.uint_le(n);
      if (!w.has(len)) break;
      w.skip(len);
    } else if (layout & kLines) {
      bool ok = true;
      for (int i = 0; i < n && ok; ++i) ok = w.line(s);
      if (!ok) break;
      if (op == 'g') {  // GET: parsed as the VM parses it
        char* e = nullptr;
        const unsigned long long idx = std::strtoull(s.c_str(), &e, 10);
        if (s.empty() || !e || *e != '\0') break;
        add(idx);
      }
    } else {
      break;  // STOP; an unknown opcode, EXT or out-of-band buffer: the VM stops there
    }
  }
  std::sort(m.far_.begin(), m.far_.end());
  return m;
}

bool MemoReads::read_far(uint64_t idx) const { return std::binary_search(far_.begin(), far_.end(), idx); }

}  // namespace tb::pickle
