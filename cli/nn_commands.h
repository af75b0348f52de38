// `tensorbridge run`: load weights into a model and run it on an input array.
#pragma once

#include <CLI/CLI.hpp>

namespace tb::cli {

/** Adds the `run` subcommand; called once from register_commands(). */
void register_nn_commands(CLI::App& app);

}  // namespace tb::cli
