// What formats/oneflow.cpp (folders, meta files, writers) and formats/oneflow_pickle.cpp (flow.save
// pickles and OneFlow's table of globals) share. Not installed; not for other formats.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "formats/detail/open_beneath.h"
#include "formats/format.h"

namespace tb::oneflow_detail {

inline constexpr const char* kTag = "[oneflow]";
inline constexpr size_t kMaxDepth = 1000;                       // nesting of pickled values and modules
inline constexpr uint64_t kMaxPickleBytes = uint64_t(1) << 30;  // largest pickled_data / flow.save file

/** A single path component: not empty, not . or .., no separator or NUL. */
bool is_single_component(const std::string& s);
/** "[oneflow] '<folder>':", the start of messages about entries of a folder. */
std::string folder_context(const ConfinedFolder& f);
/** Reads a variable folder (meta + out): both are opened inside it, never through a link. */
Tensor load_variable(const ConfinedFolder& var, bool mmap);

/** flow.save folder: pickled_data with tensors in tensor folders beside it. */
Checkpoint load_pickle_dir(const ConfinedFolder& dir, const LoadOptions& opts);
/** flow.save single file: one pickle whose tensors carry numpy arrays. */
Checkpoint load_single_file(const Reader& r, const LoadOptions& opts);

}  // namespace tb::oneflow_detail
