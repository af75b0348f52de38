#pragma once

#include <filesystem>

#include <CLI/CLI.hpp>

namespace tb::cli {

/** Thrown by a command to end the process with a specific exit code (e.g. diff's 1). */
struct ExitCode {
  int code;
};

void register_commands(CLI::App& app);

/** The main job (cli/demo.cpp); returns the exit code. */
int run_demo(const std::filesystem::path& fixtures_dir);

}  // namespace tb::cli
