// Which memo entries a pickle reads back: a pass over the opcodes before the VM runs (see
// pickle_vm.h, MemoReads).
#include <algorithm>
#include <cstdlib>
#include <cstring>

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
    uint8_t b = 0;
    get(&b, 1);
    return b;
  }
  uint64_t uint_le(size_t n) {
    uint8_t b[8] = {};
    get(b, n);
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

// Bytes of the fixed-size argument of op, or -1 for opcodes with a length prefix or a text line.
int fixed_arg(uint8_t op) {
  switch (op) {
    case 'K':
    case 'q':
    case 'h':
    case 0x80: return 1;  // BININT1, BINPUT, BINGET, PROTO
    case 'M': return 2;   // BININT2
    case 'J':
    case 'r':
    case 'j': return 4;  // BININT, LONG_BINPUT, LONG_BINGET
    case 0x95:
    case 'G': return 8;  // FRAME, BINFLOAT
    case '(':
    case '0':
    case '1':
    case '2':
    case 'N':
    case 0x88:
    case 0x89:
    case ')':
    case 't':
    case 0x85:
    case 0x86:
    case 0x87:
    case ']':
    case 'l':
    case '}':
    case 'd':
    case 0x8f:
    case 0x90:
    case 0x91:
    case 'a':
    case 'e':
    case 's':
    case 'u':
    case 0x93:
    case 'o':
    case 0x81:
    case 0x92:
    case 'R':
    case 'b':
    case 'Q':
    case 0x94: return 0;
    default: return -1;
  }
}

// Bytes of the length prefix of op (whose data follows), or 0 when op has none.
size_t length_prefix(uint8_t op) {
  switch (op) {
    case 0x8a:            // LONG1
    case 0x8c:            // SHORT_BINUNICODE
    case 'C':             // SHORT_BINBYTES
    case 'U': return 1;   // SHORT_BINSTRING
    case 0x8b:            // LONG4
    case 'X':             // BINUNICODE
    case 'B':             // BINBYTES
    case 'T': return 4;   // BINSTRING
    case 0x8d:            // BINUNICODE8
    case 0x8e:            // BINBYTES8
    case 0x96: return 8;  // BYTEARRAY8
    default: return 0;
  }
}

// Text lines after op: GLOBAL and INST have two, the other protocol-0 opcodes one.
int text_lines(uint8_t op) {
  switch (op) {
    case 'c':
    case 'i': return 2;
    case 'I':
    case 'L':
    case 'F':
    case 'S':
    case 'V':
    case 'p':
    case 'g':
    case 'P': return 1;
    default: return 0;
  }
}

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
      if (idx >= m.dense_.size()) m.dense_.resize(size_t(idx) + 1);
      m.dense_[size_t(idx)] = true;
    } else {
      m.far_.push_back(idx);
    }
  };
  // Stops at STOP, at the end of the range and at whatever the walker cannot decode: the VM
  // refuses the pickle at that same opcode, so no read after it can happen.
  while (w.has(1)) {
    const uint8_t op = w.u8();
    if (op == '.') break;
    if (const int n = fixed_arg(op); n >= 0) {
      if (!w.has(uint64_t(n))) break;
      if (op == 'h' || op == 'j')
        add(w.uint_le(size_t(n)));
      else
        w.skip(uint64_t(n));
    } else if (const size_t p = length_prefix(op)) {
      if (!w.has(p)) break;
      const uint64_t len = w.uint_le(p);
      if (!w.has(len)) break;
      w.skip(len);
    } else if (const int lines = text_lines(op)) {
      bool ok = true;
      for (int i = 0; i < lines && ok; ++i) ok = w.line(s);
      if (!ok) break;
      if (op == 'g') {  // GET: parsed as the VM parses it
        char* e = nullptr;
        const unsigned long long idx = std::strtoull(s.c_str(), &e, 10);
        if (s.empty() || !e || *e != '\0') break;
        add(idx);
      }
    } else {
      break;  // unknown opcode, EXT or out-of-band buffer: the VM stops here
    }
  }
  std::sort(m.far_.begin(), m.far_.end());
  return m;
}

bool MemoReads::read(uint64_t idx) const {
  if (all_) return true;
  if (idx < dense_.size()) return dense_[size_t(idx)];
  return std::binary_search(far_.begin(), far_.end(), idx);
}

}  // namespace tb::pickle
