#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "formats/format.h"

#include <CLI/CLI.hpp>

namespace tb::cli {

/** Thrown by a command to end the process with a specific exit code (e.g. diff's 1). */
struct ExitCode {
  int code;
};

void register_commands(CLI::App& app);
/** The convert command (cli/convert.cpp). */
void register_convert(CLI::App& app);

/** "1.5 MiB": bytes for people. */
std::string human_bytes(uint64_t n);
/** Help of --readable-names, shared by inspect and convert. */
extern const char* const kReadableNamesHelp;

/** The flags that shape how an input is read, shared by inspect and convert. */
struct LoadFlags {
  bool allow_unknown_globals = false;
  bool keep_quantized = false;
  bool readable_names = false;
  /** LoadOptions from these flags; readable names also when the command implies them. */
  LoadOptions options(bool readable_names_implied = false) const;
};
/** Adds --allow-unknown-globals, --keep-quantized and --readable-names to cmd (the last two with the
 *  command's own help). */
void add_load_flags(CLI::App* cmd, LoadFlags& flags, const std::string& keep_quantized_help,
                    const std::string& readable_names_help);

/** The main job (cli/demo.cpp); returns the exit code. */
int run_demo(const std::filesystem::path& fixtures_dir);

}  // namespace tb::cli
