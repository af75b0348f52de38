// The object graph a TensorFlow checkpoint bundle carries under "_CHECKPOINTABLE_OBJECT_GRAPH" (a
// serialized TrackableObjectGraph): which Python objects own which keys, so that
// `tf.train.Checkpoint(...).restore(path)` and Keras `load_weights` restore by object.
//
// The writer's mapping from tensor names to object paths (TensorFlow restores by object only keys of the
// form "<path>/.ATTRIBUTES/VARIABLE_VALUE", so only those enter the graph):
//  - a TensorFlow key "a/b/.ATTRIBUTES/VARIABLE_VALUE" (a bundle read without --readable-names, or any name
//    written with keys=tf): the objects a -> b, TensorFlow's escapes in each component undone (".S" is '/',
//    ".." is '.'); keys under ".OPTIMIZER_SLOT/" stay out (slot variables need the optimizer's objects);
//  - keys=tf turns any other name ("fc1.weight", "layer_with_weights-0/kernel") into such a key first:
//    split at '.' and '/' into nested objects (fc1 -> weight); a name with an empty component is one
//    object named by the whole name.
// The variable is the path's last object, with one attribute VARIABLE_VALUE naming its bundle key.
#pragma once

#include <string>
#include <vector>

namespace tb {

/** One tensor to place in the graph: its bundle key, and the name that decides its object path. */
struct TfGraphVariable {
  std::string key;   // the key the bundle stores it under
  std::string name;  // the tensor's name (usually equal to key)
};

/** Where one name sits: the object path (unescaped local names), or empty when it stays out of the graph. */
std::vector<std::string> tf_object_path(const std::string& name);

/** The key TensorFlow would give the variable at path: escaped components, "/.ATTRIBUTES/VARIABLE_VALUE". */
std::string tf_key_for_path(const std::vector<std::string>& path);

/** A serialized TrackableObjectGraph whose root (node 0) reaches every variable through its path, with
 *  `root_child` (when not empty) as one object between the root and all of them. A second variable at a
 *  path already holding one is left out of the graph (its tensor stays in the bundle). */
std::string build_tf_object_graph(const std::vector<TfGraphVariable>& vars, const std::string& root_child);

}  // namespace tb
