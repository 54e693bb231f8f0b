// Reading and writing the JSON description of a graph (format: graph_json.h, docs/graph.md).
#include "qfuse/graph/graph_json.h"
#include "graph/text.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "graph/validate_impl.h"
#include "qfuse/graph/op_registry.h"

namespace qfuse::graph {
namespace {

using json = nlohmann::ordered_json;

using detail::invalid;
Status check_keys(const json& obj, const std::string& where,
                  std::initializer_list<const char*> keys) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    bool known = false;
    std::string list;
    for (const char* k : keys) {
      known |= it.key() == k;
      list += (list.empty() ? "" : ", ") + std::string(k);
    }
    if (!known) return invalid(where + ": unknown key '" + it.key() + "' (keys: " + list + ")");
  }
  return Status::Ok();
}

Status read_dims(const json& j, const std::string& key,
                 std::vector<std::pair<std::string, int64_t>>* dims) {
  if (!j.contains(key)) return Status::Ok();
  const json& d = j.at(key);
  if (!d.is_object()) return invalid("key '" + key + "': expected an object of name: size");
  for (auto it = d.begin(); it != d.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0)
      return invalid("key '" + key + "': dim '" + it.key() + "': expected a size >= 0, got " +
                     it.value().dump());
    dims->emplace_back(it.key(), it.value().get<int64_t>());
  }
  return Status::Ok();
}

Status read_names(const json& j, const std::string& key, std::vector<std::string>* out) {
  if (!j.contains(key)) return invalid("key '" + key + "' is missing (a list of tensor names)");
  const json& a = j.at(key);
  if (!a.is_array()) return invalid("key '" + key + "': expected a list of tensor names");
  for (const json& e : a) {
    if (!e.is_string()) return invalid("key '" + key + "': expected tensor names, got " + e.dump());
    out->push_back(e.get<std::string>());
  }
  return Status::Ok();
}

Status read_ports(const json& node, const std::string& where, const char* key,
                  std::map<std::string, std::string>* out) {
  if (!node.contains(key)) return Status::Ok();
  const json& p = node.at(key);
  if (!p.is_object())
    return invalid(where + ": key '" + key + "': expected an object of port: tensor");
  for (auto it = p.begin(); it != p.end(); ++it) {
    if (!it.value().is_string())
      return invalid(where + ": " + std::string(key) + " '" + it.key() +
                     "': expected a tensor name, got " + it.value().dump());
    (*out)[it.key()] = it.value().get<std::string>();
  }
  return Status::Ok();
}

Status read_tensor(const std::string& name, const json& t,
                   const std::vector<std::pair<std::string, int64_t>>& dims, TensorDesc* out) {
  const std::string where = "tensor '" + name + "'";
  if (!t.is_object()) return invalid(where + ": expected an object {dtype, shape, quant}");
  QFUSE_RETURN_IF_ERROR(check_keys(t, where, {"dtype", "shape", "quant"}));
  out->name = name;
  if (!t.contains("dtype") || !t.at("dtype").is_string())
    return invalid(where + ": key 'dtype' is missing or not a string");
  const auto dt = parse_dtype(t.at("dtype").get<std::string>());
  if (!dt)
    return invalid(where + ": unknown dtype '" + t.at("dtype").get<std::string>() +
                   "' (bf16, fp16, fp32, e4m3, e2m1x2, ue8m0, i32, u8)");
  out->dtype = *dt;
  if (!t.contains("shape") || !t.at("shape").is_array())
    return invalid(where + ": key 'shape' is missing or not a list");
  bool symbolic = false;
  std::vector<std::string> exprs;
  for (const json& e : t.at("shape")) {
    int64_t v = 0;
    if (e.is_number_integer()) {
      v = e.get<int64_t>();
      exprs.push_back(std::to_string(v));
    } else if (e.is_string()) {
      symbolic = true;
      const Status st = eval_dim_expr(e.get<std::string>(), dims, &v);
      if (!st.ok()) return invalid(where + ": " + st.message());
      exprs.push_back(e.get<std::string>());
    } else {
      return invalid(where + ": shape entries are sizes or dim expressions, got " + e.dump());
    }
    out->shape.push_back(v);
  }
  if (symbolic) out->shape_expr = std::move(exprs);
  if (t.contains("quant")) {
    if (!t.at("quant").is_string()) return invalid(where + ": key 'quant': expected a string");
    const Status st = parse_quant_spec(t.at("quant").get<std::string>(), &out->quant);
    if (!st.ok()) return invalid(where + ": key 'quant': " + st.message());
  }
  return Status::Ok();
}

Status read_node(const json& j, size_t index, Node* n) {
  std::string where = "nodes[" + std::to_string(index) + "]";
  if (!j.is_object()) return invalid(where + ": expected an object");
  if (!j.contains("name") || !j.at("name").is_string())
    return invalid(where + ": key 'name' is missing or not a string");
  n->name = j.at("name").get<std::string>();
  where = "node '" + n->name + "'";
  QFUSE_RETURN_IF_ERROR(check_keys(j, where, {"name", "op", "inputs", "outputs", "attrs"}));
  if (!j.contains("op") || !j.at("op").is_string())
    return invalid(where + ": key 'op' is missing or not a string");
  n->op = j.at("op").get<std::string>();
  QFUSE_RETURN_IF_ERROR(read_ports(j, where, "inputs", &n->inputs));
  QFUSE_RETURN_IF_ERROR(read_ports(j, where, "outputs", &n->outputs));
  if (j.contains("attrs")) {
    const json& a = j.at("attrs");
    if (!a.is_object()) return invalid(where + ": key 'attrs': expected an object");
    for (auto it = a.begin(); it != a.end(); ++it) {
      const json& v = it.value();
      if (v.is_string())
        n->attrs[it.key()] = v.get<std::string>();
      else if (v.is_boolean())
        n->attrs[it.key()] = v.get<bool>() ? "true" : "false";
      else if (v.is_number_integer())
        n->attrs[it.key()] = std::to_string(v.get<int64_t>());
      else if (v.is_number())
        n->attrs[it.key()] = v.dump();
      else
        return invalid(where + ": attr '" + it.key() +
                       "': expected a string, number or bool, got " + v.dump());
    }
  }
  return Status::Ok();
}

}  // namespace

Status parse_graph_json(const std::string& text, const ParseOptions& opt, Graph* out) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    return invalid(std::string("graph JSON: ") + e.what());
  }
  if (!j.is_object()) return invalid("graph JSON: expected an object at the top level");
  QFUSE_RETURN_IF_ERROR(check_keys(
      j, "graph",
      {"name", "description", "dims", "host_dims", "inputs", "outputs", "tensors", "nodes"}));
  Graph g;
  if (j.contains("name")) {
    if (!j.at("name").is_string()) return invalid("key 'name': expected a string");
    g.name = j.at("name").get<std::string>();
  }
  QFUSE_RETURN_IF_ERROR(read_dims(j, "dims", &g.dims));
  QFUSE_RETURN_IF_ERROR(read_dims(j, "host_dims", &g.host_dims));
  for (const auto& [k, v] : g.host_dims) {
    bool found = false;
    for (const auto& d : g.dims) found |= d.first == k;
    if (!found) return invalid("key 'host_dims': dim '" + k + "' is not in \"dims\"");
  }
  auto set_dim = [&](const std::string& k, int64_t v, const char* what) -> Status {
    for (auto& d : g.dims)
      if (d.first == k) {
        d.second = v;
        return Status::Ok();
      }
    return invalid(std::string(what) + " '" + k + "': the graph has no such dim");
  };
  if (opt.use_host_dims)
    for (const auto& [k, v] : g.host_dims) QFUSE_RETURN_IF_ERROR(set_dim(k, v, "host dim"));
  for (const auto& [k, v] : opt.dim_overrides) {
    if (v < 0) return invalid("dim override '" + k + "': expected a size >= 0");
    QFUSE_RETURN_IF_ERROR(set_dim(k, v, "dim override"));
  }

  QFUSE_RETURN_IF_ERROR(read_names(j, "inputs", &g.inputs));
  QFUSE_RETURN_IF_ERROR(read_names(j, "outputs", &g.outputs));
  if (j.contains("tensors")) {
    const json& ts = j.at("tensors");
    if (!ts.is_object()) return invalid("key 'tensors': expected an object of name: tensor");
    for (auto it = ts.begin(); it != ts.end(); ++it) {
      TensorDesc d;
      QFUSE_RETURN_IF_ERROR(read_tensor(it.key(), it.value(), g.dims, &d));
      g.tensors[it.key()] = d;
    }
  }
  if (!j.contains("nodes") || !j.at("nodes").is_array())
    return invalid("key 'nodes' is missing or not a list");
  size_t i = 0;
  for (const json& nj : j.at("nodes")) {
    Node n;
    QFUSE_RETURN_IF_ERROR(read_node(nj, i++, &n));
    g.nodes.push_back(std::move(n));
  }

  // Tensors written by a node may be left out: their types are inferred.
  std::set<std::string> infer;
  for (const Node& n : g.nodes)
    for (const auto& [port, t] : n.outputs)
      if (g.tensors.count(t) == 0) infer.insert(t);
  QFUSE_RETURN_IF_ERROR(detail::validate_graph(&g, opt.registry, &infer));
  *out = std::move(g);
  return Status::Ok();
}

Status load_graph_file(const std::string& path, const ParseOptions& opt, Graph* out) {
  std::ifstream f(path);
  if (!f) return invalid("graph file '" + path + "' cannot be read");
  std::stringstream ss;
  ss << f.rdbuf();
  const Status st = parse_graph_json(ss.str(), opt, out);
  if (!st.ok()) return Status(st.code(), path + ": " + st.message());
  return Status::Ok();
}

std::string to_json(const Graph& g, const OpRegistry* registry) {
  const OpRegistry& reg = registry != nullptr ? *registry : default_registry();
  json j;
  j["name"] = g.name;
  if (!g.dims.empty()) {
    json d = json::object();
    for (const auto& [k, v] : g.dims) d[k] = v;
    j["dims"] = d;
  }
  if (!g.host_dims.empty()) {
    json d = json::object();
    for (const auto& [k, v] : g.host_dims) d[k] = v;
    j["host_dims"] = d;
  }
  j["inputs"] = g.inputs;
  j["outputs"] = g.outputs;
  json ts = json::object();
  for (const auto& [name, t] : g.tensors) {
    json e;
    e["dtype"] = std::string(to_string(t.dtype));
    json shape = json::array();
    for (size_t i = 0; i < t.shape.size(); ++i) {
      if (t.shape_expr.size() == t.shape.size())
        shape.push_back(t.shape_expr[i]);
      else
        shape.push_back(t.shape[i]);
    }
    e["shape"] = shape;
    if (t.quant.kind != QuantKind::kNone) e["quant"] = to_string(t.quant);
    ts[name] = e;
  }
  j["tensors"] = ts;
  json nodes = json::array();
  for (const Node& n : g.nodes) {
    json e;
    e["name"] = n.name;
    e["op"] = n.op;
    e["inputs"] = json::object();
    for (const auto& [p, t] : n.inputs) e["inputs"][p] = t;
    e["outputs"] = json::object();
    for (const auto& [p, t] : n.outputs) e["outputs"][p] = t;
    json attrs = json::object();
    const OpDef* def = reg.find(n.op);
    for (const auto& [k, v] : n.attrs) {
      AttrType type = AttrType::kString;
      if (def != nullptr)
        for (const AttrDef& a : def->attrs)
          if (a.name == k) type = a.type;
      try {
        if (type == AttrType::kInt)
          attrs[k] = std::stoll(v);
        else if (type == AttrType::kFloat)
          attrs[k] = std::stod(v);
        else if (type == AttrType::kBool)
          attrs[k] = v == "true";
        else
          attrs[k] = v;
      } catch (const std::exception&) {
        attrs[k] = v;  // an invalid value stays text (validate() reports it)
      }
    }
    e["attrs"] = attrs;
    nodes.push_back(e);
  }
  j["nodes"] = nodes;
  return j.dump(2) + "\n";
}

}  // namespace qfuse::graph
