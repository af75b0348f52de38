// The globals table, helpers for rules, and the rules of Python's builtins; see pickle_rules.h.
#include "formats/detail/pickle_rules.h"

namespace tb::pickle {

// ---- table ----------------------------------------------------------------------------------------

void Globals::merge(const Globals& other) {
  for (const auto& [q, r] : other.exact_) exact_[q] = r;
  for (const auto& p : other.prefixes_) prefixes_.push_back(p);
  for (const auto& [c, r] : other.builds_) builds_[c] = r;
}

const Rule* Globals::find(const std::string& q) const {
  auto it = exact_.find(q);
  if (it != exact_.end()) return &it->second;
  for (const auto& [prefix, r] : prefixes_)
    if (q.rfind(prefix, 0) == 0) return &r;
  return nullptr;
}

const BuildRule* Globals::build_rule(const std::string& cls) const {
  auto it = builds_.find(cls);
  return it == builds_.end() ? nullptr : &it->second;
}

void Context::nargs(const std::string& q, const ValueList& a, size_t lo, size_t hi) const {
  TB_CHECK(a.size() >= lo && a.size() <= hi, FormatError, at(), ": ", q, " takes ", lo, lo == hi ? "" : str("..", hi),
           " arguments but the pickle gives ", a.size());
}

// ---- helpers ----------------------------------------------------------------------------------------

const std::string* global_name(const Value& v) {
  if (v.kind() != Value::Kind::Object) return nullptr;
  const auto& o = v.as_object();
  if (o.cls != "global" || !o.args || !o.args->is_str()) return nullptr;
  return &o.args->as_str();
}

std::string brief(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::List:
    case Value::Kind::Tuple:
    case Value::Kind::Set: return str(v.kind_name(), " of ", v.items().size());
    case Value::Kind::Dict: return str("dict of ", v.dict_data().items.size());
    case Value::Kind::Object: {
      if (const std::string* q = global_name(v)) return "global " + *q;
      return v.as_object().cls + " object";
    }
    default: return v.repr(60);
  }
}

std::string utf8_to_latin1(const std::string& s, const std::string& where) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) {
      out.push_back(char(c));
      ++i;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size()) {
      unsigned cp = ((c & 0x1Fu) << 6) | ((unsigned char)s[i + 1] & 0x3Fu);
      TB_CHECK(cp < 256, FormatError, where, ": _codecs.encode: character U+", cp, " is not latin-1");
      out.push_back(char(cp));
      i += 2;
    } else {
      throw FormatError(str(where, ": _codecs.encode: character outside latin-1"));
    }
  }
  return out;
}

// ---- builtins ---------------------------------------------------------------------------------------

namespace {

// dict(items) / OrderedDict(items) / Counter(items) / defaultdict(factory, items).
Value make_dict(Context& c, const std::string& q, Value, const ValueList& a) {
  Value d = Value::dict(q == "builtins.dict" ? "" : q);
  size_t first = q == "collections.defaultdict" ? 1 : 0;  // defaultdict(default_factory, items)
  if (a.size() > first && !a[first].is_none()) {
    const Value& src = a[first];
    if (src.is_dict()) {
      c.charge_values(src.dict_data().items.size());
      d.dict_data().items = src.dict_data().items;
    } else {
      TB_CHECK(src.is_sequence(), FormatError, c.at(), ": ", q, " argument must be pairs but is ", brief(src));
      c.charge_values(src.items().size());
      for (const auto& kv : src.items()) {
        TB_CHECK(kv.is_sequence() && kv.items().size() == 2, FormatError, c.at(), ": ", q, " item is not a pair");
        d.dict_data().items.emplace_back(kv.items()[0], kv.items()[1]);
      }
    }
  }
  return d;
}

Value make_set(Context& c, const std::string& q, Value, const ValueList& a) {
  c.nargs(q, a, 0, 1);
  Value s = Value::set();
  if (a.empty()) return s;
  if (a[0].is_dict()) {
    c.charge_values(a[0].dict_data().items.size());
    for (const auto& kv : a[0].dict_data().items) s.items().push_back(kv.first);
  } else {
    TB_CHECK(a[0].kind() == Value::Kind::List || a[0].kind() == Value::Kind::Tuple || a[0].kind() == Value::Kind::Set,
             FormatError, c.at(), ": ", q, " argument must be a sequence but is ", brief(a[0]));
    c.charge_values(a[0].items().size());
    s.items() = a[0].items();
  }
  return s;
}

Value make_bytes(Context& c, const std::string& q, Value, const ValueList& a) {
  c.nargs(q, a, 0, 2);
  if (a.empty()) return Value::bytes("");
  const auto k = a[0].kind();
  if (k == Value::Kind::Str || k == Value::Kind::Bytes) c.charge_bytes(a[0].as_str().size(), "copying a string");
  if (k == Value::Kind::List) c.charge_bytes(a[0].items().size(), "building bytes from a list");
  if (k == Value::Kind::Str && a.size() == 2) return Value::bytes(utf8_to_latin1(a[0].as_str(), c.at()));
  if (k == Value::Kind::Bytes || k == Value::Kind::Str) return Value::bytes(a[0].as_str());
  if (k == Value::Kind::List) {
    std::string b;
    for (const auto& x : a[0].items()) b.push_back(char(x.as_int()));
    return Value::bytes(b);
  }
  throw FormatError(str(c.at(), ": ", q, " argument ", brief(a[0]), " not understood"));
}

Value codecs_encode(Context& c, const std::string& q, Value, const ValueList& a) {
  c.nargs(q, a, 1, 2);
  TB_CHECK(a[0].kind() == Value::Kind::Str || a[0].kind() == Value::Kind::Bytes, FormatError, c.at(),
           ": _codecs.encode expects a str but got ", brief(a[0]));
  std::string enc = a.size() > 1 ? a[1].as_str() : "utf-8";
  c.charge_bytes(a[0].as_str().size(), "copying a string");
  if (enc == "latin1" || enc == "latin-1" || enc == "iso-8859-1")
    return Value::bytes(a[0].kind() == Value::Kind::Bytes ? a[0].as_str() : utf8_to_latin1(a[0].as_str(), c.at()));
  if (enc == "utf-8" || enc == "utf8" || enc == "ascii") return Value::bytes(a[0].as_str());
  throw UnsupportedError(str(c.at(), ": _codecs.encode with encoding '", enc, "'"));
}

// range(...) materialised when small (a tiny pickle must not become a huge list); else an object.
Value make_range(Context& c, const std::string& q, Value args, const ValueList& a) {
  c.nargs(q, a, 1, 3);
  int64_t start = a.size() > 1 ? a[0].as_int() : 0, stop = a.size() > 1 ? a[1].as_int() : a[0].as_int();
  int64_t step = a.size() > 2 ? a[2].as_int() : 1;
  TB_CHECK(step != 0, FormatError, c.at(), ": range() with step 0");
  int64_t n = step > 0 ? (stop > start ? (stop - start + step - 1) / step : 0)
                       : (start > stop ? (start - stop - step - 1) / -step : 0);
  if (n > 65536) return Value::object("builtins.range", std::move(args));
  c.charge_values(uint64_t(n));
  ValueList items;
  for (int64_t i = 0, x = start; i < n; ++i, x += step) items.push_back(Value::integer(x));
  return Value::list(std::move(items));
}

Value make_sequence(Context& c, const std::string& q, Value, const ValueList& a) {
  c.nargs(q, a, 0, 1);
  ValueList items;
  if (!a.empty()) {
    c.charge_values(a[0].items().size());
    items = a[0].items();
  }
  return q == "builtins.list" ? Value::list(std::move(items)) : Value::tuple(std::move(items));
}

Value make_scalar(Context& c, const std::string& q, Value, const ValueList& a) {  // int/float/bool/str(x)
  c.nargs(q, a, 0, 1);
  if (a.empty()) return q == "builtins.str" ? Value::string("") : Value::integer(0);
  return a[0];
}

Value empty_dict_of(Context&, const std::string& q, Value, const ValueList&) {
  return Value::dict(q == "builtins.dict" ? "" : q);
}

}  // namespace

void add_builtin_rules(Globals& g) {
  for (const char* q : {"collections.OrderedDict", "collections.Counter", "builtins.dict", "collections.defaultdict"})
    g.add(q, {make_dict, empty_dict_of});
  const CallRule new_set = [](Context&, const std::string&, Value, const ValueList&) { return Value::set(); };
  g.add("builtins.set", {make_set, new_set});
  g.add("builtins.frozenset", {make_set, new_set});
  g.add("builtins.list",
        {make_sequence, [](Context&, const std::string&, Value, const ValueList&) { return Value::list(); }});
  g.add("builtins.tuple", {make_sequence, {}});
  g.add("builtins.complex", {[](Context& c, const std::string& q, Value, const ValueList& a) {
          c.nargs(q, a, 0, 2);
          double re = a.size() > 0 ? a[0].as_float() : 0.0, im = a.size() > 1 ? a[1].as_float() : 0.0;
          return Value::complex({re, im});
        }});
  g.add("builtins.slice", {[](Context& c, const std::string& q, Value, const ValueList& a) {
          c.nargs(q, a, 1, 3);
          ValueList t = a;
          while (t.size() < 3) t.push_back(Value());
          return Value::tuple(t);
        }});
  g.add("builtins.bytearray", {make_bytes});
  g.add("builtins.bytes", {make_bytes});
  for (const char* q : {"builtins.int", "builtins.float", "builtins.bool", "builtins.str"}) g.add(q, {make_scalar});
  const CallRule object = [](Context&, const std::string&, Value, const ValueList&) {
    return Value::object("builtins.object");
  };
  g.add("builtins.object", {object, object});
  g.add("_codecs.encode", {codecs_encode});
  g.add("copyreg._reconstructor", {[](Context& c, const std::string& q, Value, const ValueList& a) {
          c.nargs(q, a, 2, 3);
          Value inst = c.instantiate(a[0], Value::tuple());
          if (a.size() == 3 && !a[2].is_none() && inst.kind() == Value::Kind::Object) *inst.as_object().args = a[2];
          return inst;
        }});
  g.add("builtins.range", {make_range});
  g.add("builtins.xrange", {make_range});
}

}  // namespace tb::pickle
