#include <algorithm>
#include <map>
#include <random>

#include "tests/support.h"

#include "tensor/byte_size.h"
#include "tensor/io.h"
#include "tensor/value.h"

using namespace tb;

TEST_CASE("views share storage and gather with strides", "[tensor]") {
  Tensor base = Tensor::from_vector<float>(DType::F32, {3, 4}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  Tensor t = base.transpose(0, 1);
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.shares_storage(base));
  auto v = t.to_vector<float>();
  CHECK(v == std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  Tensor evens = base.view({12}).slice(0, 1, 12, 2);
  CHECK(evens.to_vector<float>() == std::vector<float>{1, 3, 5, 7, 9, 11});
  evens.data_as<float>()[0] = 100;  // writes through to the base
  CHECK(base.to_vector<float>()[1] == 100);
}

TEST_CASE("a view outside its storage is refused", "[tensor]") {
  auto s = Storage::allocate(16);
  CHECK_THROWS_AS(Tensor(s, DType::F32, {5}, {1}, 0), ShapeError);
  CHECK_THROWS_AS(Tensor(s, DType::F32, {2, 2}, {2, 1}, 4), ShapeError);
  CHECK_NOTHROW(Tensor(s, DType::F32, {2, 2}, {2, 1}, 0));
}

TEST_CASE("empty shapes with huge other dimensions: strides overflow is an error", "[tensor]") {
  // fuzz_onnx finding: dims [0, 2^40, 2^40] hold no element, but their strides overflowed int64.
  REQUIRE(contiguous_strides({0, 3, 4}) == Shape{12, 4, 1});
  REQUIRE_THROWS_AS(contiguous_strides({0, int64_t(1) << 40, int64_t(1) << 40}), ShapeError);
  REQUIRE_THROWS_WITH(Tensor::zeros(DType::F32, {0, int64_t(1) << 40, int64_t(1) << 40}),
                      Catch::Contains("strides that do not fit in 64 bits"));
}

TEST_CASE("StateDict rejects duplicates and names close keys", "[tensor]") {
  StateDict sd;
  sd.insert("hidden.weight", Tensor::zeros(DType::F32, {2, 2}));
  CHECK_THROWS_AS(sd.insert("hidden.weight", Tensor::zeros(DType::F32, {1})), KeyError);
  try {
    sd.at("model.hidden.weight");
    FAIL("expected KeyError");
  } catch (const KeyError& e) {
    CHECK(std::string(e.what()).find("'hidden.weight'") != std::string::npos);
  }
}

TEST_CASE("StateDict finds every name after inserts, renames and erases, in insertion order", "[tensor]") {
  // Against std::map over a random sequence that grows the index many times and shifts probe runs.
  std::mt19937 gen(3);
  StateDict sd;
  std::map<std::string, int64_t> ref;
  std::vector<std::string> order;
  auto name = [&] { return "layer." + std::to_string(gen() % 3000) + (gen() % 2 ? ".weight" : ".b"); };
  for (int step = 0; step < 20000; ++step) {
    const std::string n = name();
    switch (gen() % 4) {
      case 0:
      case 1:
        if (ref.count(n)) {
          CHECK_THROWS_AS(sd.insert(n, Tensor::zeros(DType::F32, {1})), KeyError);
        } else {
          sd.insert(n, Tensor::zeros(DType::F32, {int64_t(step % 7)}));
          ref[n] = step % 7;
          order.push_back(n);
        }
        break;
      case 2:
        if (ref.count(n)) {
          const std::string to = name();
          if (ref.count(to) && to != n) break;
          sd.rename(n, to);
          const int64_t v = ref[n];
          ref.erase(n);
          ref[to] = v;
          std::replace(order.begin(), order.end(), n, to);
        }
        break;
      default:
        CHECK(sd.erase(n) == (ref.erase(n) == 1));
        order.erase(std::remove(order.begin(), order.end(), n), order.end());
    }
  }
  REQUIRE(sd.size() == ref.size());
  CHECK(sd.keys() == order);
  for (const auto& [n, len] : ref) {
    INFO(n);
    REQUIRE(sd.contains(n));
    CHECK(sd.at(n).numel() == len);
  }
  for (int i = 0; i < 3000; ++i) {
    const std::string n = "layer." + std::to_string(i) + ".weight";
    CHECK(sd.contains(n) == (ref.count(n) == 1));
  }
  StateDict copy = sd;  // the index travels with copies and moves
  StateDict moved = std::move(copy);
  for (const auto& [n, len] : ref) CHECK(moved.find(n) == &moved.at(n));
  CHECK(moved.keys() == order);
}

TEST_CASE("Value flatten gives dotted keys and reports other values", "[tensor]") {
  Value root = Value::dict();
  root.set_item(Value::string("epoch"), Value::integer(7));
  Value msd = Value::dict();
  Tensor w = Tensor::zeros(DType::F32, {2});
  msd.set_item(Value::string("hidden.weight"), Value::tensor(w));
  root.set_item(Value::string("model_state_dict"), msd);
  Value lst = Value::list({Value::tensor(w), Value::tensor(w)});
  root.set_item(Value::string("xs"), lst);
  std::vector<NonTensor> skipped;
  StateDict sd = flatten(root, &skipped);
  CHECK(sd.keys() == std::vector<std::string>{"model_state_dict.hidden.weight", "xs.0", "xs.1"});
  REQUIRE(skipped.size() == 1);
  CHECK(skipped[0].path == "epoch");
  CHECK(skipped[0].repr == "7");
  CHECK(sd.at("xs.0").shares_storage(sd.at("xs.1")));
  CHECK(value_at_path(root, "model_state_dict").is_dict());
  CHECK_THROWS_AS(value_at_path(root, "optimizer_state_dict"), KeyError);
}

TEST_CASE("AtomicFileWriter leaves nothing behind unless committed", "[io]") {
  tbtest::TempDir dir;
  auto target = dir / "out.bin";
  {
    AtomicFileWriter w(target);
    w.write(std::string("partial"));
  }
  CHECK_FALSE(std::filesystem::exists(target));
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), std::filesystem::directory_iterator()) == 0);
  {
    AtomicFileWriter w(target);
    w.write(std::string("complete"));
    w.commit();
  }
  CHECK(read_text_file(target) == "complete");
  CHECK_THROWS_AS(AtomicFileWriter(target), IoError);  // no overwrite without permission
  {
    AtomicFileWriter w(target, true);
    w.write(std::string("new"));
    w.commit();
  }
  CHECK(read_text_file(target) == "new");
}

TEST_CASE("Reader reports truncation with the file name", "[io]") {
  auto r = memory_reader({1, 2, 3}, "x.bin");
  try {
    r->read_bytes(2, 4);
    FAIL("expected FormatError");
  } catch (const FormatError& e) {
    CHECK(std::string(e.what()).find("'x.bin' is truncated") != std::string::npos);
  }
}

TEST_CASE("map_tensors copies the tree and keeps shared tensors shared", "[tensor]") {
  Tensor w = Tensor::from_vector<float>(DType::F32, {2}, {1.5f, -2.0f});
  Value t = Value::tensor(w);
  Value root = Value::dict();
  root.set_item(Value::string("a"), t);
  root.set_item(Value::string("tied"), t);
  root.set_item(Value::string("epoch"), Value::integer(3));
  Value out = map_tensors(root, [](const Tensor& x) { return x.to(DType::F16); });
  CHECK(out.get("a")->as_tensor().dtype() == DType::F16);
  CHECK(out.get("a")->identity() == out.get("tied")->identity());
  CHECK(out.get("epoch")->as_int() == 3);
  CHECK(root.get("a")->as_tensor().dtype() == DType::F32);  // the input is untouched
}

TEST_CASE("one byte-size parser: decimal KB/MB/GB, binary K/M/G and KiB/MiB/GiB, errors naming the option",
          "[tensor]") {
  CHECK(tb::parse_byte_size("5GB", "x") == 5000000000ull);
  CHECK(tb::parse_byte_size("1.5 kb", "x") == 1500);
  CHECK(tb::parse_byte_size("512M", "x") == 512ull << 20);
  CHECK(tb::parse_byte_size("8g", "x") == 8ull << 30);
  CHECK(tb::parse_byte_size("2GiB", "x") == 2ull << 30);
  CHECK(tb::parse_byte_size("1_048_576", "x") == 1048576);
  CHECK(tb::parse_byte_size("0", "x") == 0);
  CHECK_THROWS_WITH(tb::parse_byte_size("GB", "shard size"),
                    Catch::Contains("shard size 'GB' must start with a number"));
  CHECK_THROWS_WITH(tb::parse_byte_size("5 parsecs", "--max-memory"),
                    Catch::Contains("--max-memory '5 parsecs': unknown unit"));
  CHECK_THROWS_AS(tb::parse_byte_size("99999999999T", "x"), tb::UnsupportedError);
}
