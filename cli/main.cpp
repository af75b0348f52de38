// tensorbridge: the command-line tool. Subcommands live in commands.cpp; this file parses the
// command line and maps errors to exit codes: 0 ok, 1 bad input or usage, 2 internal error or out of
// memory.
#include <iostream>
#include <new>
#include <string>

#include <CLI/CLI.hpp>
#ifdef TB_WITH_MIMALLOC
#include <mimalloc.h>
#endif

#include "cli/commands.h"
#include "tensor/atomic_output.h"
#include "tensor/byte_size.h"
#include "tensor/error.h"
#include "tensor/limits.h"

namespace {
// mimalloc's operator new aborts when no new_handler is set; with this one a failed allocation
// throws std::bad_alloc, which main turns into exit 2 (destructors remove temporary outputs).
[[noreturn]] void throw_bad_alloc() { throw std::bad_alloc(); }

}  // namespace

int main(int argc, char** argv) {
  std::set_new_handler(throw_bad_alloc);
#ifdef TB_WITH_MIMALLOC
  // 2 MiB pages for the heap: a 100,000-tensor load spent a fifth of its time zeroing 4 KiB pages in
  // page faults. MIMALLOC_LARGE_OS_PAGES=0 turns it off; without transparent huge pages it does nothing.
  mi_option_set_enabled_default(mi_option_large_os_pages, true);
#endif
  CLI::App app{"tensorbridge: move neural-network weights between frameworks"};
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 ok, 1 bad input or usage, 2 internal error or out of memory (diff: 1 means the files differ).\n"
      "Run 'tensorbridge SUBCOMMAND --help' for options and examples.");
  std::string version = "tensorbridge 0.1.0";
#ifdef TB_WITH_MIMALLOC
  // Also makes the mimalloc dependency a referenced one, so the linker keeps it (it replaces malloc).
  version += " (allocator: mimalloc " + std::to_string(mi_version() / 100) + "." +
             std::to_string(mi_version() / 10 % 10) + "." + std::to_string(mi_version() % 10) + ")";
#endif
  app.set_version_flag("--version", version);
  // Load budget (tensor/limits.h): global options, accepted after any subcommand too.
  app.fallthrough();
  tb::LoadLimits limits;
  std::string max_memory;
  bool trust_large = false;
  app.add_option("--max-memory", max_memory,
                 "memory a load may build beyond the input's own size (default 1G), e.g. 8G, for trusted huge files");
  app.add_option("--max-objects", limits.max_objects, "values a load may build (default 10000000)");
  app.add_option("--max-seconds", limits.max_seconds,
                 "seconds a load may spend parsing structure (default 120; 0: no limit)");
  app.add_flag("--trust-large", trust_large, "lift the memory, object and time limits of loading (trusted files only)");
  app.parse_complete_callback([&] {
    if (!max_memory.empty()) limits.max_bytes = tb::parse_byte_size(max_memory, "--max-memory");
    if (trust_large) limits = tb::LoadLimits::unlimited();
    tb::set_default_load_limits(limits);
  });
  tb::cli::register_commands(app);
  tb::install_temp_cleanup_handlers();  // SIGINT/SIGTERM remove this process's temporary outputs
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "tensorbridge: " << e.what() << " (see --help)\n";
    return 1;
  } catch (const tb::cli::ExitCode& e) {
    return e.code;
  } catch (const tb::InternalError& e) {
    std::cerr << "tensorbridge: " << e.what() << "\n";
    return 2;
  } catch (const tb::OutOfMemoryError& e) {
    std::cerr << "tensorbridge: " << e.what() << "\n";
    return 2;
  } catch (const tb::Error& e) {
    std::cerr << "tensorbridge: " << e.what() << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "tensorbridge: out of memory (std::bad_alloc)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "tensorbridge: internal error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
