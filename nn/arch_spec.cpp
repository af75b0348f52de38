#include "nn/arch_spec.h"

#include <cctype>
#include <cstdlib>
#include <sstream>
#include <vector>

namespace tb::nn {

namespace {

struct Token {
  std::string name, text;
  std::vector<std::string> args;
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::stringstream ss(s);
  while (std::getline(ss, item, sep)) out.push_back(item);
  if (!s.empty() && s.back() == sep) out.emplace_back();
  return out;
}

[[noreturn]] void bad(const std::string& spec, const Token& t, const std::string& why) {
  throw UnsupportedError(str("nn: --arch '", spec, "': layer '", t.text, "' ", why, "\n", arch_spec_help()));
}

int64_t positive(const std::string& spec, const Token& t, const std::string& v, bool zero_ok = false) {
  char* end = nullptr;
  long long n = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || !end || *end || n < (zero_ok ? 0 : 1) || n >= (1LL << 31))
    bad(spec, t, str("has '", v, "' where a ", zero_ok ? "non-negative" : "positive", " integer belongs"));
  return n;
}

double real(const std::string& spec, const Token& t, const std::string& v) {
  char* end = nullptr;
  double d = std::strtod(v.c_str(), &end);
  if (v.empty() || !end || *end || !(d == d)) bad(spec, t, str("has '", v, "' where a number belongs"));
  return d;
}

// Drops a trailing "nobias" argument; returns whether the layer has a bias.
bool take_bias(Token& t) {
  if (!t.args.empty() && t.args.back() == "nobias") {
    t.args.pop_back();
    return false;
  }
  return true;
}

void arity(const std::string& spec, const Token& t, size_t lo, size_t hi, const char* form) {
  if (t.args.size() < lo || t.args.size() > hi) bad(spec, t, str("needs the form ", form));
}

}  // namespace

const char* arch_spec_help() {
  return "  --arch forms: mlp:IN,HIDDEN,...,OUT | seed-cnn | a layer sequence such as \"linear:20,256 relu "
         "linear:256,10\"\n"
         "  layers: linear:IN,OUT[,nobias]  conv2d:IN,OUT,K[,STRIDE[,PAD]][,nobias]  maxpool:K[,STRIDE[,PAD]]\n"
         "          avgpool[:K[,STRIDE[,PAD]]]  batchnorm:N  flatten  relu  leakyrelu[:SLOPE]  sigmoid  tanh\n"
         "          softmax[:DIM]  dropout[:P]  identity";
}

std::shared_ptr<Sequential> parse_layer_sequence(const std::string& spec) {
  std::vector<Token> tokens;
  std::stringstream ss(spec);
  for (std::string word; ss >> word;) {
    Token t;
    t.text = word;
    auto colon = word.find(':');
    t.name = word.substr(0, colon);
    for (char& c : t.name) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (colon != std::string::npos) t.args = split(word.substr(colon + 1), ',');
    tokens.push_back(std::move(t));
  }
  TB_CHECK(!tokens.empty(), UnsupportedError, "nn: --arch is empty\n", arch_spec_help());
  auto seq = std::make_shared<Sequential>();
  enum class Rank { Unknown, Flat, Spatial } rank = Rank::Unknown;
  for (size_t i = 0; i < tokens.size(); ++i) {
    Token t = tokens[i];
    const std::string& n = t.name;
    auto no_args = [&] {
      if (!t.args.empty()) bad(spec, t, "takes no arguments");
    };
    if (n == "linear" || n == "dense") {
      bool bias = take_bias(t);
      arity(spec, t, 2, 2, "linear:IN,OUT[,nobias]");
      seq->add(std::make_shared<Linear>(positive(spec, t, t.args[0]), positive(spec, t, t.args[1]), bias));
      rank = Rank::Flat;
    } else if (n == "conv2d" || n == "conv") {
      bool bias = take_bias(t);
      arity(spec, t, 3, 5, "conv2d:IN,OUT,K[,STRIDE[,PAD]][,nobias]");
      Conv2d::Options o;
      o.bias = bias;
      int64_t k = positive(spec, t, t.args[2]);
      if (t.args.size() > 3) o.stride_h = o.stride_w = positive(spec, t, t.args[3]);
      if (t.args.size() > 4) o.pad_h = o.pad_w = positive(spec, t, t.args[4], true);
      seq->add(std::make_shared<Conv2d>(positive(spec, t, t.args[0]), positive(spec, t, t.args[1]), k, k, o));
      rank = Rank::Spatial;
    } else if (n == "maxpool" || n == "maxpool2d" || n == "avgpool" || n == "avgpool2d") {
      bool avg = n.rfind("avg", 0) == 0;
      if (avg && t.args.empty()) {
        seq->add(std::make_shared<GlobalAvgPool2d>());
      } else {
        arity(spec, t, 1, 3,
              avg ? "avgpool:K[,STRIDE[,PAD]] (or avgpool for a global average)" : "maxpool:K[,STRIDE[,PAD]]");
        int64_t k = positive(spec, t, t.args[0]);
        int64_t s = t.args.size() > 1 ? positive(spec, t, t.args[1]) : 0;
        int64_t p = t.args.size() > 2 ? positive(spec, t, t.args[2], true) : 0;
        if (avg)
          seq->add(std::make_shared<AvgPool2d>(k, s, p));
        else
          seq->add(std::make_shared<MaxPool2d>(k, s, p));
      }
      rank = Rank::Spatial;
    } else if (n == "batchnorm" || n == "bn" || n == "batchnorm1d" || n == "batchnorm2d") {
      arity(spec, t, 1, 1, "batchnorm:N");
      int dims = n == "batchnorm1d" ? 1 : n == "batchnorm2d" ? 2 : 0;
      if (!dims && rank != Rank::Unknown) dims = rank == Rank::Spatial ? 2 : 1;
      for (size_t j = i + 1; !dims && j < tokens.size(); ++j) {  // first layer: the next shaped layer decides
        const std::string& m = tokens[j].name;
        if (m.rfind("conv", 0) == 0 || m.find("pool") != std::string::npos) dims = 2;
        if (m == "linear" || m == "dense" || m == "flatten") dims = 1;
      }
      seq->add(std::make_shared<BatchNorm>(dims ? dims : 1, positive(spec, t, t.args[0])));
    } else if (n == "flatten") {
      no_args();
      seq->add(std::make_shared<Flatten>());
      rank = Rank::Flat;
    } else if (n == "relu") {
      no_args();
      seq->add(std::make_shared<ReLU>());
    } else if (n == "leakyrelu") {
      arity(spec, t, 0, 1, "leakyrelu[:SLOPE]");
      seq->add(std::make_shared<LeakyReLU>(t.args.empty() ? 0.01 : real(spec, t, t.args[0])));
    } else if (n == "sigmoid") {
      no_args();
      seq->add(std::make_shared<Sigmoid>());
    } else if (n == "tanh") {
      no_args();
      seq->add(std::make_shared<Tanh>());
    } else if (n == "softmax") {
      arity(spec, t, 0, 1, "softmax[:DIM]");
      int64_t dim = 1;
      if (!t.args.empty()) {
        char* end = nullptr;
        dim = std::strtoll(t.args[0].c_str(), &end, 10);
        if (t.args[0].empty() || *end || dim < -8 || dim > 8) bad(spec, t, "needs an integer dimension");
      }
      seq->add(std::make_shared<Softmax>(dim));
    } else if (n == "dropout") {
      arity(spec, t, 0, 1, "dropout[:P]");
      double p = t.args.empty() ? 0.5 : real(spec, t, t.args[0]);
      if (p < 0 || p > 1) bad(spec, t, "needs a probability between 0 and 1");
      seq->add(std::make_shared<Dropout>(p));
    } else if (n == "identity") {
      no_args();
      seq->add(std::make_shared<Identity>());
    } else {
      bad(spec, t, "is not a known layer");
    }
  }
  return seq;
}

Module::Ptr builtin_model(const std::string& spec) {
  if (spec == "seed-cnn" || spec == "cnn") return seed_cnn();
  if (spec.rfind("mlp:", 0) == 0) {
    std::vector<int64_t> sizes;
    for (const std::string& item : split(spec.substr(4), ',')) {
      char* end = nullptr;
      long long v = std::strtoll(item.c_str(), &end, 10);
      TB_CHECK(!item.empty() && end && *end == 0 && v > 0 && v < (1LL << 31), UnsupportedError, "nn: --arch '", spec,
               "': '", item, "' is not a positive layer size");
      sizes.push_back(v);
    }
    TB_CHECK(sizes.size() >= 2, UnsupportedError, "nn: --arch '", spec, "' needs at least two sizes (mlp:20,256,10)");
    if (sizes.size() == 3) return std::make_shared<MLP>(sizes[0], sizes[1], sizes[2]);
    auto s = std::make_shared<Sequential>();
    for (size_t i = 0; i + 1 < sizes.size(); ++i) {
      if (i) s->add(std::make_shared<ReLU>());
      s->add(std::make_shared<Linear>(sizes[i], sizes[i + 1]));
    }
    return s;
  }
  // A layer sequence has a ':' argument or several words; anything else is an unknown name.
  if (spec.find_first_of(": \t") != std::string::npos) return parse_layer_sequence(spec);
  static const char* const kSingle[] = {"relu", "flatten", "sigmoid", "tanh", "softmax", "identity", "avgpool"};
  for (const char* s : kSingle)
    if (spec == s) return parse_layer_sequence(spec);
  throw UnsupportedError(str("nn: unknown built-in architecture '", spec,
                             "'; choices: mlp:IN,HIDDEN,...,OUT (e.g. mlp:20,256,10), seed-cnn, or a layer sequence\n",
                             arch_spec_help()));
}

}  // namespace tb::nn
