// HDF5 library access shared by reading and writing: initialisation, error stack -> message,
// external links refused, small object queries.
#include "formats/detail/h5_internal.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace tb {
namespace h5detail {

void h5_init() {
  static bool done = [] {
    H5open();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

herr_t collect_error(unsigned n, const H5E_error2_t* e, void* data) {
  auto* out = static_cast<std::vector<std::string>*>(data);
  if (n < 4 && e && e->desc && *e->desc) out->push_back(e->desc);
  return 0;
}

/** HDF5's own messages (innermost first), then clears the stack. */
std::string error_stack() {
  std::vector<std::string> msgs;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_error, &msgs);
  H5Eclear2(H5E_DEFAULT);
  std::string s;
  for (const auto& m : msgs) s += (s.empty() ? "" : "; ") + m;
  return s.empty() ? "no HDF5 detail" : s;
}

[[noreturn]] void fail(const std::string& label, const std::string& what) {
  throw FormatError(str("[h5] '", label, "': ", what, " (HDF5: ", error_stack(), ")"));
}

Handle check_id(hid_t id, Handle::Closer c, const std::string& label, const std::string& what) {
  if (id < 0) fail(label, what);
  return Handle(id, c);
}

herr_t deny_elink(const char* parent, const char* obj, const char* tfile, const char*, unsigned*, hid_t, void*) {
  (void)parent;
  (void)obj;
  (void)tfile;
  return -1;  // never traverse into another file
}

/** Link access list that refuses external links, used for every open. */
hid_t safe_lapl() {
  static hid_t lapl = [] {
    hid_t p = H5Pcreate(H5P_LINK_ACCESS);
    H5Pset_elink_cb(p, deny_elink, nullptr);
    H5Pset_nlinks(p, 16);
    return p;
  }();
  return lapl;
}

bool has_attr(hid_t obj, const char* name) {
  htri_t e = H5Aexists(obj, name);
  H5Eclear2(H5E_DEFAULT);
  return e > 0;
}

bool has_link(hid_t loc, const char* name) {
  htri_t e = H5Lexists(loc, name, H5P_DEFAULT);
  H5Eclear2(H5E_DEFAULT);
  return e > 0;
}

bool is_group(hid_t loc, const char* name) {
  if (!has_link(loc, name)) return false;
  H5O_info_t info;
#if H5_VERSION_GE(1, 12, 0)
  herr_t rc = H5Oget_info_by_name3(loc, name, &info, H5O_INFO_BASIC, safe_lapl());
#else
  herr_t rc = H5Oget_info_by_name2(loc, name, &info, H5O_INFO_BASIC, safe_lapl());
#endif
  H5Eclear2(H5E_DEFAULT);
  return rc >= 0 && info.type == H5O_TYPE_GROUP;
}

}  // namespace h5detail
}  // namespace tb
