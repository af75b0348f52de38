// Builds the TrackableObjectGraph of a bundle we write; the mapping is in tf_checkpoint_graph.h.
#include "formats/tf_checkpoint_graph.h"

#include <map>

#include "tf/tf_checkpoint.pb.h"

namespace tb {

namespace {

constexpr const char* kAttributes = "/.ATTRIBUTES/";
constexpr const char* kVariableValue = "VARIABLE_VALUE";

/** Undoes TensorFlow's escape of a local name in a key: ".S" is '/', ".." is '.'. */
std::string unescape_component(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '.' && i + 1 < s.size() && (s[i + 1] == '.' || s[i + 1] == 'S')) {
      out += s[i + 1] == '.' ? '.' : '/';
      ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string escape_component(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '.')
      out += "..";
    else if (c == '/')
      out += ".S";
    else
      out += c;
  }
  return out;
}

std::vector<std::string> split_any(const std::string& s, const std::string& seps) {
  std::vector<std::string> parts(1);
  for (char c : s) {
    if (seps.find(c) != std::string::npos)
      parts.emplace_back();
    else
      parts.back() += c;
  }
  return parts;
}

}  // namespace

std::vector<std::string> tf_object_path(const std::string& name) {
  if (name.empty() || name.find("/.OPTIMIZER_SLOT/") != std::string::npos) return {};
  const size_t at = name.find(kAttributes);
  if (at != std::string::npos) {
    if (name.substr(at + std::string(kAttributes).size()) != kVariableValue) return {};
    std::vector<std::string> path = split_any(name.substr(0, at), "/");
    for (auto& c : path) {
      if (c.empty()) return {};
      c = unescape_component(c);
    }
    return path;
  }
  std::vector<std::string> path = split_any(name, "./");
  for (const auto& c : path)
    if (c.empty()) return {name};
  return path;
}

std::string tf_key_for_path(const std::vector<std::string>& path) {
  std::string key;
  for (const auto& c : path) key += escape_component(c) + "/";
  return key + ".ATTRIBUTES/" + kVariableValue;
}

std::string build_tf_object_graph(const std::vector<TfGraphVariable>& vars, const std::string& root_child) {
  tfpb::TrackableObjectGraph g;
  std::vector<std::map<std::string, int>> children(1);  // node -> local name -> child node
  std::vector<bool> holds_value(1, false);
  auto child = [&](int node, const std::string& local) {
    auto it = children[size_t(node)].find(local);
    if (it != children[size_t(node)].end()) return it->second;
    const int id = int(children.size());
    children.emplace_back();
    holds_value.push_back(false);
    children[size_t(node)].emplace(local, id);
    return id;
  };
  std::vector<std::pair<int, const TfGraphVariable*>> attrs;
  const int top = root_child.empty() ? 0 : child(0, root_child);
  for (const auto& v : vars) {
    const std::vector<std::string> path = tf_object_path(v.name);
    if (path.empty()) continue;
    int node = top;
    for (const auto& c : path) node = child(node, c);
    if (holds_value[size_t(node)]) continue;
    holds_value[size_t(node)] = true;
    attrs.emplace_back(node, &v);
  }
  for (size_t i = 0; i < children.size(); ++i) g.add_nodes();
  for (size_t i = 0; i < children.size(); ++i)
    for (const auto& [local, id] : children[i]) {
      auto* ref = g.mutable_nodes(int(i))->add_children();
      ref->set_node_id(id);
      ref->set_local_name(local);
    }
  for (const auto& [node, v] : attrs) {
    auto* a = g.mutable_nodes(node)->add_attributes();
    a->set_name(kVariableValue);
    a->set_full_name(v->name);
    a->set_checkpoint_key(v->key);
  }
  return g.SerializeAsString();
}

}  // namespace tb
