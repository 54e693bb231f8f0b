// Reading and writing the JSON description of a graph (format: graph_json.h, docs/graph.md).
#include "qfuse/graph/graph_json.h"
#include "graph/text.h"

#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "graph/json_reader.h"
#include "graph/validate_impl.h"
#include "qfuse/core/checked.h"
#include "qfuse/core/quote.h"
#include "qfuse/core/tensor.h"
#include "qfuse/graph/op_registry.h"

namespace qfuse::graph {
namespace {

using detail::check_name;
using detail::get_int;
using detail::invalid;
using detail::json;
using detail::type_name;

/// Named dims in file order with an index, so a lookup costs the same for 10 dims or 1 M.
struct Dims {
  std::vector<std::pair<std::string, int64_t>>* list;
  std::unordered_map<std::string, size_t> index;
  explicit Dims(std::vector<std::pair<std::string, int64_t>>* l) : list(l) {
    for (size_t i = 0; i < l->size(); ++i) index.emplace((*l)[i].first, i);
  }
  const int64_t* find(const std::string& name) const {
    auto it = index.find(name);
    return it == index.end() ? nullptr : &(*list)[it->second].second;
  }
};

Status check_keys(const json& obj, const std::string& where,
                  std::initializer_list<const char*> keys) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    bool known = false;
    std::string list;
    for (const char* k : keys) {
      known |= it.key() == k;
      list += (list.empty() ? "" : ", ") + std::string(k);
    }
    if (!known)
      return invalid(where + ": unknown key " + quote_text(it.key()) + " (keys: " + list + ")");
  }
  return Status::Ok();
}

Status read_dims(const json& j, const std::string& key,
                 std::vector<std::pair<std::string, int64_t>>* dims) {
  if (!j.contains(key)) return Status::Ok();
  const json& d = j.at(key);
  if (!d.is_object())
    return invalid("key '" + key + "': expected an object of name: size, got " + type_name(d));
  dims->reserve(d.size());
  for (auto it = d.begin(); it != d.end(); ++it) {
    const std::string label = "key '" + key + "': dim " + quote_text(it.key());
    QFUSE_RETURN_IF_ERROR(check_name(it.key(), "key '" + key + "': dim name"));
    int64_t v = 0;
    QFUSE_RETURN_IF_ERROR(get_int(it.value(), label, 0, kMaxElements, &v));
    dims->emplace_back(it.key(), v);
  }
  return Status::Ok();
}

Status read_names(const json& j, const std::string& key, std::vector<std::string>* out) {
  if (!j.contains(key)) return invalid("key '" + key + "' is missing (a list of tensor names)");
  const json& a = j.at(key);
  if (!a.is_array())
    return invalid("key '" + key + "': expected a list of tensor names, got " + type_name(a));
  size_t i = 0;
  for (const json& e : a) {
    const std::string label = "key '" + key + "'[" + std::to_string(i++) + "]";
    if (!e.is_string()) return invalid(label + ": expected a tensor name, got " + type_name(e));
    QFUSE_RETURN_IF_ERROR(check_name(e.get_ref<const std::string&>(), label));
    out->push_back(e.get<std::string>());
  }
  return Status::Ok();
}

Status read_ports(const json& node, const std::string& where, const char* key,
                  std::map<std::string, std::string>* out) {
  if (!node.contains(key)) return Status::Ok();
  const json& p = node.at(key);
  if (!p.is_object())
    return invalid(where + ": key '" + key + "': expected an object of port: tensor, got " +
                   type_name(p));
  for (auto it = p.begin(); it != p.end(); ++it) {
    const std::string label = where + ": " + key + " " + quote_text(it.key());
    QFUSE_RETURN_IF_ERROR(check_name(it.key(), where + ": key '" + key + "': port name"));
    if (!it.value().is_string())
      return invalid(label + ": expected a tensor name, got " + type_name(it.value()));
    QFUSE_RETURN_IF_ERROR(check_name(it.value().get_ref<const std::string&>(), label));
    (*out)[it.key()] = it.value().get<std::string>();
  }
  return Status::Ok();
}

Status read_tensor(const std::string& name, const json& t, const Dims& dims, TensorDesc* out) {
  const std::string where = "tensor " + quote_text(name);
  QFUSE_RETURN_IF_ERROR(check_name(name, "key 'tensors': tensor name"));
  if (!t.is_object())
    return invalid(where + ": expected an object {dtype, shape, quant}, got " + type_name(t));
  QFUSE_RETURN_IF_ERROR(check_keys(t, where, {"dtype", "shape", "quant"}));
  out->name = name;
  if (!t.contains("dtype") || !t.at("dtype").is_string())
    return invalid(where + ": key 'dtype': expected a string, got " +
                   (t.contains("dtype") ? type_name(t.at("dtype")) : "nothing"));
  const std::string& dtype = t.at("dtype").get_ref<const std::string&>();
  const auto dt = parse_dtype(dtype);
  if (!dt)
    return invalid(where + ": key 'dtype': unknown dtype " + quote_text(dtype) +
                   " (bf16, fp16, fp32, e4m3, e2m1x2, ue8m0, i32, u8, i64)");
  out->dtype = *dt;
  if (!t.contains("shape") || !t.at("shape").is_array())
    return invalid(where + ": key 'shape': expected a list of sizes, got " +
                   (t.contains("shape") ? type_name(t.at("shape")) : "nothing"));
  const json& shape = t.at("shape");
  if (shape.empty() || shape.size() > static_cast<size_t>(TensorRef::kMaxRank))
    return invalid(where + ": key 'shape': expected rank 1.." +
                   std::to_string(TensorRef::kMaxRank) + ", got " + std::to_string(shape.size()));
  bool symbolic = false;
  std::vector<std::string> exprs;
  for (size_t d = 0; d < shape.size(); ++d) {
    const json& e = shape[d];
    const std::string label = where + ": shape[" + std::to_string(d) + "]";
    int64_t v = 0;
    if (e.is_string()) {
      symbolic = true;
      const std::string& expr = e.get_ref<const std::string&>();
      QFUSE_RETURN_IF_ERROR(check_name(expr, label + " (a dim expression)"));
      const Status st = detail::eval_dim_expr(
          expr, [&](const std::string& n) { return dims.find(n); }, &v);
      if (!st.ok()) return invalid(label + ": " + st.message());
      exprs.push_back(expr);
    } else if (e.is_number()) {
      QFUSE_RETURN_IF_ERROR(get_int(e, label, 0, kMaxElements, &v));
      exprs.push_back(std::to_string(v));
    } else {
      return invalid(label + ": expected a size or a dim expression, got " + type_name(e));
    }
    out->shape.push_back(v);
  }
  if (const SizeProblem p = check_sizes(out->shape.data(), static_cast<int>(out->shape.size()));
      !p.ok())
    return invalid(where + ": shape " + detail::shape_text(out->shape) + ": dim " +
                   std::to_string(p.dim) + ": expected " + p.reason);
  if (symbolic) out->shape_expr = std::move(exprs);
  if (t.contains("quant")) {
    if (!t.at("quant").is_string())
      return invalid(where + ": key 'quant': expected a string, got " + type_name(t.at("quant")));
    const Status st = parse_quant_spec(t.at("quant").get_ref<const std::string&>(), &out->quant);
    if (!st.ok()) return invalid(where + ": key 'quant': " + st.message());
  }
  return Status::Ok();
}

Status read_node(const json& j, size_t index, Node* n) {
  std::string where = "nodes[" + std::to_string(index) + "]";
  if (!j.is_object()) return invalid(where + ": expected an object, got " + type_name(j));
  if (!j.contains("name") || !j.at("name").is_string())
    return invalid(where + ": key 'name': expected a string, got " +
                   (j.contains("name") ? type_name(j.at("name")) : "nothing"));
  QFUSE_RETURN_IF_ERROR(
      check_name(j.at("name").get_ref<const std::string&>(), where + ": key 'name'"));
  n->name = j.at("name").get<std::string>();
  where = "node " + quote_text(n->name);
  QFUSE_RETURN_IF_ERROR(check_keys(j, where, {"name", "op", "inputs", "outputs", "attrs"}));
  if (!j.contains("op") || !j.at("op").is_string())
    return invalid(where + ": key 'op': expected a string, got " +
                   (j.contains("op") ? type_name(j.at("op")) : "nothing"));
  QFUSE_RETURN_IF_ERROR(check_name(j.at("op").get_ref<const std::string&>(), where + ": key 'op'"));
  n->op = j.at("op").get<std::string>();
  QFUSE_RETURN_IF_ERROR(read_ports(j, where, "inputs", &n->inputs));
  QFUSE_RETURN_IF_ERROR(read_ports(j, where, "outputs", &n->outputs));
  if (j.contains("attrs")) {
    const json& a = j.at("attrs");
    if (!a.is_object())
      return invalid(where + ": key 'attrs': expected an object, got " + type_name(a));
    for (auto it = a.begin(); it != a.end(); ++it) {
      QFUSE_RETURN_IF_ERROR(check_name(it.key(), where + ": key 'attrs': attr name"));
      const json& v = it.value();
      if (v.is_string())
        n->attrs[it.key()] = v.get<std::string>();
      else if (v.is_boolean())
        n->attrs[it.key()] = v.get<bool>() ? "true" : "false";
      else if (v.is_number_unsigned())
        n->attrs[it.key()] = std::to_string(v.get<uint64_t>());
      else if (v.is_number_integer())
        n->attrs[it.key()] = std::to_string(v.get<int64_t>());
      else if (v.is_number())
        n->attrs[it.key()] = v.dump();  // a finite double: at most a few dozen characters
      else
        return invalid(where + ": attr " + quote_text(it.key()) +
                       ": expected a string, number or bool, got " + type_name(v));
    }
  }
  return Status::Ok();
}

Status parse_document(const json& j, const ParseOptions& opt, Graph* out, const char** section) {
  if (!j.is_object())
    return invalid(std::string("graph JSON: expected an object at the top level, got ") +
                   type_name(j));
  QFUSE_RETURN_IF_ERROR(check_keys(
      j, "graph",
      {"name", "description", "dims", "host_dims", "inputs", "outputs", "tensors", "nodes"}));
  Graph g;
  if (j.contains("name")) {
    if (!j.at("name").is_string())
      return invalid(std::string("key 'name': expected a string, got ") + type_name(j.at("name")));
    g.name = j.at("name").get<std::string>();
  }
  if (j.contains("description") && !j.at("description").is_string())
    return invalid(std::string("key 'description': expected a string, got ") +
                   type_name(j.at("description")));
  *section = "dims";
  QFUSE_RETURN_IF_ERROR(read_dims(j, "dims", &g.dims));
  QFUSE_RETURN_IF_ERROR(read_dims(j, "host_dims", &g.host_dims));
  Dims dims(&g.dims);
  for (const auto& [k, v] : g.host_dims)
    if (dims.find(k) == nullptr)
      return invalid("key 'host_dims': dim " + quote_text(k) + " is not in \"dims\"");
  auto set_dim = [&](const std::string& k, int64_t v, const char* what) -> Status {
    auto it = dims.index.find(k);
    if (it == dims.index.end())
      return invalid(std::string(what) + " " + quote_text(k) + ": the graph has no such dim");
    g.dims[it->second].second = v;
    return Status::Ok();
  };
  if (opt.use_host_dims)
    for (const auto& [k, v] : g.host_dims) QFUSE_RETURN_IF_ERROR(set_dim(k, v, "host dim"));
  for (const auto& [k, v] : opt.dim_overrides) {
    if (v < 0 || v > kMaxElements)
      return invalid("dim override " + quote_text(k) + ": expected a size in [0, " +
                     std::to_string(kMaxElements) + "], got " + std::to_string(v));
    QFUSE_RETURN_IF_ERROR(set_dim(k, v, "dim override"));
  }

  *section = "inputs";
  QFUSE_RETURN_IF_ERROR(read_names(j, "inputs", &g.inputs));
  *section = "outputs";
  QFUSE_RETURN_IF_ERROR(read_names(j, "outputs", &g.outputs));
  *section = "tensors";
  if (j.contains("tensors")) {
    const json& ts = j.at("tensors");
    if (!ts.is_object())
      return invalid(std::string("key 'tensors': expected an object of name: tensor, got ") +
                     type_name(ts));
    for (auto it = ts.begin(); it != ts.end(); ++it) {
      TensorDesc d;
      QFUSE_RETURN_IF_ERROR(read_tensor(it.key(), it.value(), dims, &d));
      g.tensors.emplace_hint(g.tensors.end(), it.key(), std::move(d));
    }
  }
  *section = "nodes";
  if (!j.contains("nodes") || !j.at("nodes").is_array())
    return invalid(std::string("key 'nodes': expected a list of nodes, got ") +
                   (j.contains("nodes") ? type_name(j.at("nodes")) : "nothing"));
  g.nodes.reserve(j.at("nodes").size());
  size_t i = 0;
  for (const json& nj : j.at("nodes")) {
    Node n;
    QFUSE_RETURN_IF_ERROR(read_node(nj, i++, &n));
    g.nodes.push_back(std::move(n));
  }

  // Tensors written by a node may be left out: their types are inferred.
  *section = "validation";
  std::set<std::string> infer;
  for (const Node& n : g.nodes)
    for (const auto& [port, t] : n.outputs)
      if (g.tensors.count(t) == 0) infer.insert(t);
  QFUSE_RETURN_IF_ERROR(detail::validate_graph(&g, opt.registry, &infer));
  *out = std::move(g);
  return Status::Ok();
}

}  // namespace

Status parse_graph_json(const std::string& text, const ParseOptions& opt, Graph* out) {
  if (out == nullptr) return invalid("argument 'out': expected a Graph to write, got null");
  const char* section = "the document";
  // NOTE: the readers check every type before they read a value; this catch turns whatever the
  // library or the allocator still throws into a Status naming the part being read.
  try {
    json j;
    QFUSE_RETURN_IF_ERROR(detail::parse_json(text, "graph JSON", &j));
    return parse_document(j, opt, out, &section);
  } catch (const std::bad_alloc&) {
    return invalid(std::string("graph JSON: out of host memory while reading ") + section);
  } catch (const std::exception& e) {
    return invalid(std::string("graph JSON: while reading ") + section + ": " +
                   quote_text(e.what(), 160));
  }
}

Status load_graph_file(const std::string& path, const ParseOptions& opt, Graph* out) {
  if (out == nullptr) return invalid("argument 'out': expected a Graph to write, got null");
  std::string text;
  QFUSE_RETURN_IF_ERROR(
      detail::read_regular_file(path, "graph file", detail::kMaxJsonFileBytes, &text));
  const Status st = parse_graph_json(text, opt, out);
  if (!st.ok()) return Status(st.code(), quote_text(path, 200) + ": " + st.message());
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
  // NOTE: names set through the API may hold bytes that are not UTF-8: replaced, not thrown.
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace qfuse::graph
