// tensorbridge-h5probe: reads an HDF5 file's structure for the library's probe (formats/h5_probe.cpp)
// in a fresh process, started by posix_spawn from processes with several threads.
#include "formats/detail/h5_internal.h"

int main(int argc, char** argv) { return tb::h5detail::probe_main(argc, argv); }
