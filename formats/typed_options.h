// Typed writer options. A format declares its options as a struct with documented fields and a table
// binding each `--option KEY=VALUE` key to one field; the table parses SaveOptions::options once into
// the struct, refusing an unknown key or a bad value with a message that names what is accepted.
// with_writer() (formats/adapters.h) puts a table and a typed writer into a FormatAdapter.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "formats/format.h"
#include "tensor/byte_size.h"

namespace tb {

/** One option key: its help line (accepted values and default) and how a value is stored in T. */
template <class T>
struct OptionField {
  std::string key;
  std::string help;
  /** Stores value into the field; throws UnsupportedError (the caller adds the key and the format). */
  std::function<void(T&, const std::string& value)> set;
};

/** A format's options: every key its writer reads. */
template <class T>
using OptionTable = std::vector<OptionField<T>>;

/** A key whose value is one of `choices`. */
template <class T>
OptionField<T> choice_option(std::string key, std::string T::*field, std::vector<std::string> choices,
                             std::string help) {
  return {std::move(key), std::move(help), [field, choices](T& o, const std::string& v) {
            for (const auto& c : choices)
              if (c == v) return void(o.*field = v);
            std::string list;
            for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
            throw UnsupportedError(str("expected one of ", list));
          }};
}

/** A key whose value is 0 or 1. */
template <class T>
OptionField<T> flag_option(std::string key, bool T::*field, std::string help) {
  return {std::move(key), std::move(help), [field](T& o, const std::string& v) {
            TB_CHECK(v == "0" || v == "1", UnsupportedError, "expected 0 or 1");
            o.*field = v == "1";
          }};
}

/** A key whose value is a byte size ("5GB", "512M"; tb::parse_byte_size). */
template <class T>
OptionField<T> size_option(std::string key, uint64_t T::*field, std::string help) {
  return {std::move(key), std::move(help),
          [field](T& o, const std::string& v) { o.*field = parse_byte_size(v, "the size"); }};
}

/** A key whose value is any text. */
template <class T>
OptionField<T> text_option(std::string key, std::string T::*field, std::string help) {
  return {std::move(key), std::move(help), [field](T& o, const std::string& v) { o.*field = v; }};
}

/** A key whose value is a whole number >= 0. */
template <class T>
OptionField<T> count_option(std::string key, uint64_t T::*field, std::string help) {
  return {std::move(key), std::move(help), [field](T& o, const std::string& v) {
            TB_CHECK(!v.empty() && v.size() <= 18 && v.find_first_not_of("0123456789") == std::string::npos,
                     UnsupportedError, "expected a whole number >= 0");
            o.*field = std::stoull(v);
          }};
}

/** The keys and help lines of a table, for FormatAdapter::save_options (`tensorbridge formats`). */
template <class T>
std::vector<SaveOption> option_list(const OptionTable<T>& table) {
  std::vector<SaveOption> out;
  for (const auto& f : table) out.push_back({f.key, f.help});
  return out;
}

/** "<format> accepts k1: help; k2: help" or "<format> takes no options". */
std::string accepted_options(const std::string& format, const std::vector<SaveOption>& options);

/** Parses opts.options into a T (defaults for absent keys; T::overwrite from opts). An unknown key or a
 *  bad value throws UnsupportedError naming the output path, the key and what is accepted. */
template <class T>
T parse_options(const OptionTable<T>& table, const std::string& format, const std::filesystem::path& path,
                const SaveOptions& opts) {
  T out;
  out.overwrite = opts.overwrite;
  for (const auto& [key, value] : opts.options) {
    const OptionField<T>* field = nullptr;
    for (const auto& f : table) field = f.key == key ? &f : field;
    if (!field)
      throw UnsupportedError(str("cannot write '", path.string(), "' as ", format, ": unknown option '", key, "=",
                                 value, "'; ", accepted_options(format, option_list(table))));
    try {
      field->set(out, value);
    } catch (const Error& e) {
      throw UnsupportedError(str("cannot write '", path.string(), "' as ", format, ": option ", key, "='", value,
                                 "': ", e.message(), " (", field->help, ")"));
    }
  }
  return out;
}

}  // namespace tb
