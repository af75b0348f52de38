// The pickle VM: pickles written by CPython (protocols 0-5) and numpy decode to the right Values;
// hostile pickles (code execution through GLOBAL+REDUCE, STACK_GLOBAL, INST, OBJ, NEWOBJ; deep
// nesting; recursive structures; bad memo indexes; truncation; random corruption) are refused with a
// clear message, nothing is executed and nothing crashes. The writer's output is read by CPython.
#include "tests/support.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "formats/detail/pickle.h"

using namespace tb;
using namespace std::string_literals;

namespace {

std::vector<uint8_t> B(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

Value run(const std::string& bytes, pickle::Options o = {}) { return pickle::load(B(bytes), "t.pkl", o); }

std::vector<uint8_t> unhex(const std::string& h) {
  std::vector<uint8_t> v;
  for (size_t i = 0; i + 1 < h.size(); i += 2) v.push_back(uint8_t(std::stoi(h.substr(i, 2), nullptr, 16)));
  return v;
}

// Runs python (torch side: CPython + numpy 1.24) printing one hex pickle per line.
std::vector<std::vector<uint8_t>> py_pickles(const std::string& code) {
  auto r = tbtest::python(tbtest::Peer::Torch, code);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::vector<std::vector<uint8_t>> out;
  std::istringstream is(r.output);
  std::string line;
  while (std::getline(is, line))
    if (!line.empty()) out.push_back(unhex(line));
  return out;
}

std::string message_of(const std::string& bytes, pickle::Options o = {}) {
  try {
    run(bytes, o);
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

const std::string kMarker = "/tmp/tb_pickle_pwned_marker";

}  // namespace

TEST_CASE("CPython pickles of every protocol decode to the same values") {
  auto pk = py_pickles(R"(
import pickle, collections
shared = [1, 2]
obj = {'ints': [0, 1, 255, 256, 65535, 65536, -1, -2**31, 2**31, 2**40, -2**40, 2**63 - 1, -2**63],
       'floats': [1.5, -0.0, 1e300], 'str': 'h\u00e9llo \u4e16', 'bytes': b'\x00\xff\x10',
       'none': None, 't': True, 'f': False, 'tup': (1, (2, 3), ()), 'set': {7}, 'fs': frozenset([8]),
       'c': complex(1, -2), 'a': shared, 'b': shared, 'od': collections.OrderedDict([('x', 1)])}
for p in range(0, 6):
    print(pickle.dumps(obj, protocol=p).hex())
)");
  REQUIRE(pk.size() == 6);
  for (size_t p = 0; p < pk.size(); ++p) {
    INFO("protocol " << p);
    Value v = pickle::load(pk[p], "obj.pkl");
    auto ints = v.get("ints")->items();
    std::vector<int64_t> got;
    for (const auto& x : ints) got.push_back(x.as_int());
    CHECK(got == std::vector<int64_t>{0, 1, 255, 256, 65535, 65536, -1, -2147483648LL, 2147483648LL, 1099511627776LL,
                                      -1099511627776LL, INT64_MAX, INT64_MIN});
    CHECK(v.get("floats")->items()[0].as_float() == 1.5);
    CHECK(std::signbit(v.get("floats")->items()[1].as_float()));
    CHECK(v.get("floats")->items()[2].as_float() == 1e300);
    CHECK(v.get("str")->as_str() == "h\xc3\xa9llo \xe4\xb8\x96");
    CHECK(v.get("bytes")->as_str() == std::string("\x00\xff\x10", 3));
    CHECK(v.get("none")->is_none());
    CHECK(v.get("t")->as_bool());
    CHECK_FALSE(v.get("f")->as_bool());
    CHECK(v.get("tup")->items()[1].items()[1].as_int() == 3);
    CHECK(v.get("set")->kind() == Value::Kind::Set);
    CHECK(v.get("set")->items()[0].as_int() == 7);
    CHECK(v.get("fs")->items()[0].as_int() == 8);
    CHECK(v.get("c")->as_complex() == std::complex<double>(1, -2));
    // memo reference semantics: the same list object twice
    CHECK(v.get("a")->identity() == v.get("b")->identity());
    CHECK(v.get("od")->dict_data().cls == "collections.OrderedDict");
  }
}

TEST_CASE("numpy arrays, dtypes and scalars inside pickles become tensors") {
  auto pk = py_pickles(R"(
import pickle, numpy as np
a = np.arange(6, dtype='<f4').reshape(2, 3)
obj = {'c': a, 'f': np.asfortranarray(a), 'be': a.astype('>f8'), 'b': np.array([True, False]),
       's': np.float32(3.5), 'i': np.int64(-7), 'obj': np.array([1, 'x', None], dtype=object),
       'z': np.zeros((0, 3), dtype=np.int16)}
for p in (2, 4):
    print(pickle.dumps(obj, protocol=p).hex())
)");
  for (const auto& bytes : pk) {
    Value v = pickle::load(bytes, "np.pkl");
    const Tensor& c = v.get("c")->as_tensor();
    CHECK(c.shape() == Shape{2, 3});
    CHECK(c.to_vector<float>() == std::vector<float>{0, 1, 2, 3, 4, 5});
    CHECK(v.get("f")->as_tensor().to_vector<float>() == std::vector<float>{0, 1, 2, 3, 4, 5});
    const Tensor& be = v.get("be")->as_tensor();
    CHECK(be.dtype() == DType::F64);
    CHECK(be.to_vector<double>() == std::vector<double>{0, 1, 2, 3, 4, 5});
    CHECK(v.get("b")->as_tensor().dtype() == DType::Bool);
    CHECK(v.get("s")->as_tensor().dim() == 0);
    CHECK(v.get("s")->as_tensor().to_vector<float>()[0] == 3.5f);
    CHECK(v.get("i")->as_tensor().to_vector<int64_t>()[0] == -7);
    const Value& o = *v.get("obj");
    REQUIRE(o.kind() == Value::Kind::List);
    CHECK(o.items()[0].as_int() == 1);
    CHECK(o.items()[1].as_str() == "x");
    CHECK(o.items()[2].is_none());
    CHECK(v.get("z")->as_tensor().shape() == Shape{0, 3});
  }
}

TEST_CASE("code-execution attempts are refused, naming every offending global, and nothing runs") {
  std::filesystem::remove(kMarker);
  const std::string cmd = "touch " + kMarker;
  auto binunicode = [](const std::string& s) {
    std::string o = "X";
    for (int i = 0; i < 4; ++i) o.push_back(char((s.size() >> (8 * i)) & 0xFF));
    return o + s;
  };
  struct Case {
    const char* what;
    std::string bytes;
    std::vector<std::string> names;
  };
  std::vector<Case> cases = {
      {"GLOBAL+REDUCE",
       "\x80\x02"
       "cos\nsystem\n" +
           binunicode(cmd) + "\x85R.",
       {"os.system"}},
      {"STACK_GLOBAL", "\x80\x04\x8c\x02os\x8c\x06system\x93" + binunicode(cmd) + "\x85R.", {"os.system"}},
      {"INST", "(S'" + cmd + "'\nios\nsystem\n.", {"os.system"}},
      {"OBJ", "(cos\nsystem\nS'" + cmd + "'\no.", {"os.system"}},
      {"NEWOBJ",
       "\x80\x02"
       "csubprocess\nPopen\n" +
           binunicode(cmd) + "\x85\x81.",
       {"subprocess.Popen"}},
      {"several",
       "\x80\x02(cposix\nsystem\n" + binunicode(cmd) +
           "\x85R"
           "c__builtin__\neval\n" +
           binunicode("1") +
           "\x85R"
           "cbuiltins\ngetattr\n"
           "N" +
           binunicode("x") + "\x86Rl.",
       {"posix.system", "builtins.eval", "builtins.getattr"}},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    try {
      run(c.bytes);
      FAIL("expected UnsafeError");
    } catch (const UnsafeError& e) {
      std::string m = e.what();
      INFO(m);
      CHECK(m.find("t.pkl") != std::string::npos);
      for (const auto& n : c.names) CHECK(m.find(n) != std::string::npos);
    }
    // Opting in keeps them as opaque objects; still nothing is called.
    pickle::Options o;
    o.allow_unknown_globals = true;
    Value v;
    CHECK_NOTHROW(v = run(c.bytes, o));
    CHECK(!std::filesystem::exists(kMarker));
  }
  pickle::Options o;
  o.allow_unknown_globals = true;
  Value v = run(cases[0].bytes, o);
  REQUIRE(v.kind() == Value::Kind::Object);
  CHECK(v.as_object().cls == "os.system");
  CHECK(v.as_object().args->items()[0].as_str() == cmd);
  CHECK(!std::filesystem::exists(kMarker));

  // A pickle written by CPython for a class whose __reduce__ returns (os.system, (...)).
  auto pk = py_pickles(R"(
import pickle, os
class Evil:
    def __reduce__(self):
        return (os.system, ('touch /tmp/tb_pickle_pwned_marker',))
print(pickle.dumps({'w': Evil()}, protocol=2).hex())
)");
  REQUIRE(pk.size() == 1);
  CHECK_THROWS_AS(pickle::load(pk[0], "evil.pkl"), UnsafeError);
  CHECK(!std::filesystem::exists(kMarker));
  std::vector<std::string> g = pickle::globals_in(*memory_reader(pk[0]), 0, pk[0].size());
  CHECK(g == std::vector<std::string>{"posix.system"});
}

TEST_CASE("deep nesting, recursive structures and bad memo indexes are refused without crashing") {
  // 100k MARKs
  CHECK(message_of("\x80\x02" + std::string(100000, '(') + ".").find("MARK") != std::string::npos);
  // 200k nested tuples built on a stack of one
  CHECK(message_of("\x80\x02)" + std::string(200000, '\x85') + ".").find("nested deeper") != std::string::npos);
  // 100k lists on the stack, appended into each other
  CHECK(message_of("\x80\x02" + std::string(100000, ']') + std::string(99999, 'a') + ".").find("nested deeper") !=
        std::string::npos);
  // Top-down nesting through the memo: L0 memo 0; then Lk+1 appended into Lk fetched back by LONG_BINGET
  {
    std::string s = "\x80\x02]r\x00\x00\x00\x00"s;
    auto u32 = [](uint32_t x) { return std::string{char(x), char(x >> 8), char(x >> 16), char(x >> 24)}; };
    for (uint32_t i = 0; i < 50000; ++i) s += "j" + u32(i) + "]r" + u32(i + 1) + "a0";
    s += ".";
    CHECK(message_of(s).find("nested deeper") != std::string::npos);
  }
  // Tuple heights are exact for short and long tuples alike (the limit counts every level)
  {
    pickle::Options o;
    o.max_depth = 4;
    CHECK(message_of("\x80\x02)\x85\x85\x85\x85."s, o).find("tuples nested deeper than 4") != std::string::npos);
    std::string wide = "\x80\x02()\x85"s;  // MARK, ((),), then 16 ints: 17 items, height 3
    for (int i = 0; i < 16; ++i) wide += "K\x01"s;
    CHECK(message_of(wide + "t\x85\x85."s, o).find("tuples nested deeper than 4") != std::string::npos);
    CHECK(message_of(wide + "t\x85."s, o).find("tuples nested") == std::string::npos);
  }
  // A list that contains itself
  CHECK(message_of("\x80\x02]q\x00h\x00"
                   "a."s)
            .find("recursive") != std::string::npos);
  // Memo index never stored
  CHECK(message_of("\x80\x02h\x05.").find("memo index 5") != std::string::npos);
  CHECK(message_of("\x80\x02j\xff\xff\xff\x7f.").find("memo index") != std::string::npos);
  // Stack underflow, unknown opcode, no STOP, two values left
  CHECK(message_of("\x80\x02R.").find("stack is empty") != std::string::npos);
  CHECK(message_of("\x80\x02\xff.").find("unknown pickle opcode 0xff") != std::string::npos);
  CHECK(message_of("\x80\x02K\x01").find("truncated") != std::string::npos);
  CHECK(message_of("\x80\x02K\x01K\x02.").find("2 values") != std::string::npos);
  // Lengths larger than the input
  CHECK(message_of("\x80\x02X\xff\xff\xff\x7f"
                   "abc.")
            .find("truncated") != std::string::npos);
  CHECK(message_of("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff.").find("truncated") != std::string::npos);
  // Memo cap
  pickle::Options o;
  o.max_memo = 3;
  CHECK(message_of("\x80\x02K\x05q\x00q\x01q\x02q\x03."s, o).find("memo") != std::string::npos);
}

TEST_CASE("memo entries no GET reads are dropped, and what is read back is unchanged") {
  auto ints = [](const Value& v) {
    std::vector<int64_t> out;
    for (const auto& x : v.items()) out.push_back(x.as_int());
    return out;
  };
  // An index overwritten, then MEMOIZE at len(memo) (1, not 2): CPython gives [1, 2, 3, 3, 2].
  CHECK(ints(run("\x80\x04(K\x01q\x00K\x02q\x00K\x03\x94h\x01h\x00l."s)) == std::vector<int64_t>{1, 2, 3, 3, 2});
  // Text PUT/GET (protocol 0): CPython gives [7, 8, 9, 9, 8].
  CHECK(ints(run("(I7\np0\nI8\np1\nI9\np0\ng0\ng1\nl."s)) == std::vector<int64_t>{7, 8, 9, 9, 8});
  // A far-off LONG_BINPUT index read back; a dropped entry is still counted against the memo cap.
  CHECK(ints(run("\x80\x02(K\x05r\xff\xff\xff\x7fj\xff\xff\xff\x7fl."s)) == std::vector<int64_t>{5, 5});
  {
    pickle::Options o;
    o.max_memo = 2;
    CHECK(message_of("\x80\x02(K\x05q\x00q\x01q\x02l."s, o).find("more than 2 memo entries") != std::string::npos);
  }
  // A PUT needs a value even when nothing reads it back.
  CHECK(message_of("\x80\x02q\x00N."s).find("stack is empty") != std::string::npos);
  // A GET after an opcode the VM refuses does not matter: the refusal is the message.
  CHECK(message_of("\x80\x02K\x01q\x00\xffh\x00."s).find("unknown pickle opcode 0xff") != std::string::npos);

  // Shared containers read back across the 64 KiB windows of a file that is not mapped: a list of
  // 30,000 distinct strings (each memoized, none read) and a shared list stored first, read last.
  auto pk = py_pickles(R"(
import pickle
shared = [1, 2]
names = ['name%d' % i for i in range(30000)]
for p in (2, 4):
    print(pickle.dumps({'a': shared, 'names': names, 'b': shared, 'again': names}, protocol=p).hex())
)");
  REQUIRE(pk.size() == 2);
  tbtest::TempDir dir;
  for (size_t i = 0; i < pk.size(); ++i) {
    INFO("pickle " << i);
    REQUIRE(pk[i].size() > 256 * 1024);
    const auto path = dir / ("memo_" + std::to_string(i) + ".pkl");
    {
      std::ofstream f(path, std::ios::binary);
      f.write(reinterpret_cast<const char*>(pk[i].data()), std::streamsize(pk[i].size()));
    }
    auto r = open_file(path, false);
    REQUIRE(r->contiguous_bytes() == nullptr);
    Value v = pickle::load(*r, 0, r->size());
    CHECK(v.get("a")->identity() == v.get("b")->identity());
    CHECK(v.get("names")->identity() == v.get("again")->identity());
    REQUIRE(v.get("names")->items().size() == 30000);
    CHECK(v.get("names")->items()[29999].as_str() == "name29999");
    CHECK(ints(*v.get("b")) == std::vector<int64_t>{1, 2});
  }
}

TEST_CASE("an unknown object that points back at its parent becomes a placeholder, not a cycle") {
  // What OmegaConf pickles: cfg = Node(state {'name': 'root', 'child': Node(state {'_parent': cfg})}),
  // here beside a plain value: {'cfg': cfg, 'n': 7}.
  auto U = [](const std::string& x) {  // BINUNICODE
    return "X"s + char(x.size()) + std::string(3, '\0') + x;
  };
  const std::string node = "c__main__\nNode\nq\x00"s;    // GLOBAL, memo 0
  std::string s = "\x80\x02}q\x01("s + U("cfg") +        // dict memo 1, MARK, 'cfg'
                  node + ")\x81q\x02" +                  // cfg = Node() memo 2
                  "}q\x03(" + U("name") + U("root") +    // cfg.state = {'name': 'root',
                  U("child") + "h\x00)\x81q\x04"s +      //   'child': Node() memo 4
                  "}q\x05" + U("_parent") + "h\x02sb" +  // child.state = {'_parent': cfg}
                  "ub" +                                 // }
                  U("n") + "K\x07u.";                    // 'n': 7
  // Refused without the opt-in (an unknown global), and the cycle is never reached.
  CHECK(message_of(s).find("__main__.Node") != std::string::npos);
  pickle::Options o;
  o.allow_unknown_globals = true;
  Value v = run(s, o);
  REQUIRE(v.is_dict());
  CHECK(v.get("n")->as_int() == 7);
  const Value* cfg = v.get("cfg");
  REQUIRE(cfg);
  REQUIRE(cfg->kind() == Value::Kind::Object);
  CHECK(cfg->as_object().cls == "__main__.Node");
  const Value& st = *cfg->as_object().state;
  CHECK(st.get("name")->as_str() == "root");
  const Value& child = *st.get("child");
  REQUIRE(child.kind() == Value::Kind::Object);
  const Value* back = child.as_object().state->get("_parent");
  REQUIRE(back);
  CHECK(back->is_str());
  CHECK(back->as_str() == "<recursive reference to a __main__.Node object>");
  // Flattening the result terminates: the object is one non-tensor entry beside 'n'.
  std::vector<NonTensor> rest;
  CHECK(flatten(v, &rest).size() == 0);
  CHECK(rest.size() == 2);
  // An object that holds itself directly is cut the same way.
  Value self =
      run("\x80\x02"
          "c__main__\nNode\n)\x81q\x00}"s +
              U("self") + "h\x00sb."s,
          o);
  CHECK(self.as_object().state->get("self")->is_str());
  // Plain containers that contain themselves stay refused, with or without the opt-in.
  CHECK(message_of("\x80\x02]q\x00h\x00"
                   "a."s,
                   o)
            .find("recursive") != std::string::npos);
}

TEST_CASE("every truncation and random corruption of a real data.pkl fails cleanly") {
  auto pk = py_pickles(R"(
import pickle, collections, io, torch
sd = collections.OrderedDict([('w', torch.arange(6.).reshape(2, 3)), ('b', torch.zeros(2)), ('n', torch.tensor(3))])
sd._metadata = collections.OrderedDict([('', {'version': 1})])
b = io.BytesIO(); torch.save(sd, b)
import zipfile
z = zipfile.ZipFile(io.BytesIO(b.getvalue()))
print(z.read('archive/data.pkl').hex())
)");
  REQUIRE(pk.size() == 1);
  const auto good = pk[0];
  pickle::Options o;
  auto storage = Tensor::zeros(DType::F32, {64});
  o.persistent_load = [&](const Value&) { return Value::tensor(storage); };
  Value v = pickle::load(good, "data.pkl", o);
  CHECK(v.dict_data().items.size() == 3);
  CHECK(v.dict_data().attrs->items.size() == 1);  // _metadata is an attribute, not an item
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + std::ptrdiff_t(n));
    INFO("cut at " << n);
    CHECK_THROWS_AS(pickle::load(cut, "data.pkl", o), Error);
  }
  std::mt19937 rng(7);
  int failures = 0;
  for (int it = 0; it < 3000; ++it) {
    auto bad = good;
    for (int k = 0; k < 3; ++k) bad[rng() % bad.size()] = uint8_t(rng());
    try {
      pickle::load(bad, "data.pkl", o);
    } catch (const Error&) {
      ++failures;
    }
  }
  CHECK(failures > 0);
}

TEST_CASE("pickles we write are read by CPython (protocol 2, bytes via _codecs, shared containers)") {
  Value shared = Value::list({Value::integer(1)});
  Value root = Value::dict("collections.OrderedDict");
  root.set_item(Value::string("i"), Value::integer(-5));
  root.set_item(Value::string("big"), Value::integer(int64_t(1) << 40));
  root.set_item(Value::string("neg"), Value::integer(INT64_MIN));
  root.set_item(Value::string("f"), Value::real(0.1));
  root.set_item(Value::string("s"), Value::string("h\xc3\xa9"));
  root.set_item(Value::string("by"), Value::bytes(std::string("\x00\xff", 2)));
  root.set_item(Value::string("t"),
                Value::tuple({Value::boolean(true), Value::none(), Value::integer(1), Value::integer(2)}));
  root.set_item(Value::string("a"), shared);
  root.set_item(Value::string("b"), shared);
  root.set_item(Value::string("c"), Value::complex({1, 2}));
  pickle::Pickler p(2);
  p.dump(root);
  std::string hex;
  for (uint8_t c : p.bytes()) {
    static const char* d = "0123456789abcdef";
    hex += d[c >> 4];
    hex += d[c & 15];
  }
  auto r = tbtest::python(tbtest::Peer::Torch, R"(
import sys, pickle, collections
v = pickle.loads(bytes.fromhex(sys.argv[1]))
assert type(v) is collections.OrderedDict
assert v['i'] == -5 and v['big'] == 2**40 and v['neg'] == -2**63 and v['f'] == 0.1
assert v['s'] == 'h\u00e9' and v['by'] == b'\x00\xff' and v['t'] == (True, None, 1, 2)
assert v['a'] is v['b'] and v['c'] == complex(1, 2)
print('ok')
)",
                          {hex});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  // and by us
  Value back = pickle::load(p.bytes(), "ours.pkl");
  CHECK(back.get("neg")->as_int() == INT64_MIN);
  CHECK(back.get("by")->as_str() == std::string("\x00\xff", 2));
  CHECK(back.get("a")->identity() == back.get("b")->identity());
}

TEST_CASE("Python 2 era pickles: SHORT_BINSTRING data, copy_reg._reconstructor, __builtin__") {
  // A numpy float32 array as numpy on Python 2 pickles it (str data as SHORT_BINSTRING), by hand.
  std::string data("\x00\x00\x80\x3f\x00\x00\x00\x40\x00\x00\x40\x40", 12);
  std::string p =
      "\x80\x02"
      "cnumpy.core.multiarray\n_reconstruct\n"
      "cnumpy\nndarray\n"
      "K\x00\x85"
      "U\x01"
      "b\x87R"
      "(K\x01K\x03\x85"
      "cnumpy\ndtype\n"
      "U\x02"
      "f4K\x00K\x01\x87R"
      "(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
      "\x89U\x0c"s +
      data + "tb."s;
  Value v = run(p);
  REQUIRE(v.is_tensor());
  CHECK(v.as_tensor().to_vector<float>() == std::vector<float>{1, 2, 3});
  // BINSTRING keys are text; copy_reg._reconstructor objects (protocols 0/1) keep class and state
  auto pk = py_pickles(R"(
import pickle
class Foo(object):
    pass
f = Foo(); f.x = 3
for p in (0, 1):
    print(pickle.dumps({'f': f, 'r': list(range(3))}, protocol=p).hex())
)");
  for (const auto& b : pk) {
    CHECK_THROWS_AS(pickle::load(b, "py.pkl"), UnsafeError);  // __main__.Foo is not allowed
    pickle::Options o;
    o.allow_unknown_globals = true;
    Value d = pickle::load(b, "py.pkl", o);
    const Value& f = *d.get("f");
    REQUIRE(f.kind() == Value::Kind::Object);
    CHECK(f.as_object().cls == "__main__.Foo");
    CHECK(f.as_object().state->get("x")->as_int() == 3);
    CHECK(d.get("r")->items().size() == 3);
  }
  CHECK(run("\x80\x02U\x03"
            "abcq\x00."s)
            .as_str() == "abc");
  CHECK(run("\x80\x02T\x02\x00\x00\x00hi."s).is_str());
}
