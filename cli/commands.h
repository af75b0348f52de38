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
/** LoadOptions from the CLI's load flags. */
LoadOptions load_options(bool allow_unknown_globals, bool keep_quantized = false, bool readable_names = false);

/** The main job (cli/demo.cpp); returns the exit code. */
int run_demo(const std::filesystem::path& fixtures_dir);

}  // namespace tb::cli
