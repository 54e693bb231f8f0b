// Graph queries, validation, topological order and the text form.
#include "qfuse/graph/graph.h"
#include "graph/text.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <queue>
#include <set>
#include <sstream>

#include "qfuse/core/checked.h"
#include "qfuse/core/quote.h"

#include "graph/validate_impl.h"
#include "qfuse/graph/op_registry.h"

namespace qfuse::graph {
namespace {

using detail::invalid;
using detail::join;
using detail::shape_text;
/// Sizes >= 0 that multiply (zeros counted as 1) to at most kMaxElements (checked.h).
Status check_shape(const std::string& what, const std::vector<int64_t>& shape) {
  const SizeProblem p = check_sizes(shape.data(), static_cast<int>(shape.size()));
  if (p.ok()) return Status::Ok();
  return invalid(what + " shape " + shape_text(shape) + ": dim " + std::to_string(p.dim) +
                 ": expected " + p.reason);
}

/// The first field in which `actual` differs from `expected`, as "expected X, got Y".
std::string type_difference(const TensorDesc& expected, const TensorDesc& actual) {
  if (expected.dtype != actual.dtype)
    return "expected dtype " + std::string(to_string(expected.dtype)) + ", got " +
           std::string(to_string(actual.dtype));
  if (expected.shape != actual.shape)
    return "expected shape " + shape_text(expected.shape) + ", got " + shape_text(actual.shape);
  return "expected quant " + to_string(expected.quant) + ", got " + to_string(actual.quant);
}

Status check_attr_value(const Node& n, const OpDef& def, const std::string& key,
                        const std::string& value) {
  const AttrDef* a = nullptr;
  for (const AttrDef& d : def.attrs)
    if (d.name == key) a = &d;
  const std::string label = "node '" + n.name + "': attr '" + key + "'";
  if (a == nullptr) {
    std::vector<std::string> known;
    for (const AttrDef& d : def.attrs) known.push_back(d.name);
    return invalid(label + " is unknown for op '" + def.name +
                   "' (known: " + (known.empty() ? std::string("none") : join(known)) + ")");
  }
  switch (a->type) {
    case AttrType::kInt: {
      // NOTE: decimal in canonical form only (no spaces, '+' or leading zeros): the JSON form
      // writes the number back, and reading it again must give the same attribute.
      int64_t v = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc() || end != value.data() + value.size() || std::to_string(v) != value)
        return invalid(label + ": expected a decimal integer in int64 range, got " +
                       quote_text(value));
      break;
    }
    case AttrType::kFloat: {
      char* end = nullptr;
      const double v = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || !std::isfinite(v))
        return invalid(label + ": expected a finite number, got " + quote_text(value));
      break;
    }
    case AttrType::kBool:
      if (value != "true" && value != "false")
        return invalid(label + ": expected true or false, got " + quote_text(value));
      break;
    case AttrType::kDType:
      if (!parse_dtype(value)) return invalid(label + ": unknown dtype " + quote_text(value));
      break;
    case AttrType::kQuant: {
      QuantSpec s;
      const Status st = parse_quant_spec(value, &s);
      if (!st.ok()) return invalid(label + ": " + st.message());
      break;
    }
    case AttrType::kString:
      if (!a->choices.empty() &&
          std::find(a->choices.begin(), a->choices.end(), value) == a->choices.end())
        return invalid(label + ": expected one of " + join(a->choices, "|") + ", got " +
                       quote_text(value));
      break;
  }
  return Status::Ok();
}

Status check_ports(const Node& n, const OpDef& def, bool input) {
  const auto& ports = input ? n.inputs : n.outputs;
  const auto& decl = input ? def.inputs : def.outputs;
  const char* kind = input ? "input" : "output";
  for (const auto& [port, tensor] : ports) {
    bool known = false;
    for (const PortDef& p : decl) known |= p.name == port;
    if (!known) {
      std::vector<std::string> names;
      for (const PortDef& p : decl) names.push_back(p.name);
      return invalid("node '" + n.name + "': " + kind + " '" + port + "' is unknown for op '" +
                     def.name + "' (" + kind + "s: " + join(names) + ")");
    }
    if (tensor.empty())
      return invalid("node '" + n.name + "': " + kind + " '" + port + "': empty tensor name");
  }
  for (const PortDef& p : decl)
    if (!p.optional && ports.count(p.name) == 0)
      return invalid("node '" + n.name + "': " + kind + " '" + p.name + "' is required by op '" +
                     def.name + "' but not connected");
  return Status::Ok();
}

}  // namespace

// ---- TensorDesc / Node / Graph ----------------------------------------------------------------

int64_t TensorDesc::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n = saturating_mul(n, s);
  return n;
}

size_t TensorDesc::bytes() const {
  const int64_t n = numel();
  return n <= 0 ? 0
                : static_cast<size_t>(saturating_mul(n, static_cast<int64_t>(dtype_size(dtype))));
}

std::string TensorDesc::describe() const {
  std::string r = shape_text(shape) + " " + std::string(to_string(dtype));
  if (quant.kind != QuantKind::kNone) {
    r += ' ';
    r += to_string(quant);
  }
  return r;
}

std::string Node::attr(const std::string& key, const std::string& fallback) const {
  auto it = attrs.find(key);
  return it == attrs.end() ? fallback : it->second;
}

const TensorDesc* Graph::tensor(const std::string& n) const {
  auto it = tensors.find(n);
  return it == tensors.end() ? nullptr : &it->second;
}

const Node* Graph::node(const std::string& n) const {
  for (const Node& x : nodes)
    if (x.name == n) return &x;
  return nullptr;
}

bool Graph::is_input(const std::string& t) const {
  return std::find(inputs.begin(), inputs.end(), t) != inputs.end();
}

bool Graph::is_output(const std::string& t) const {
  return std::find(outputs.begin(), outputs.end(), t) != outputs.end();
}

const Node* Graph::producer(const std::string& t) const {
  for (const Node& n : nodes)
    for (const auto& [port, name] : n.outputs)
      if (name == t) return &n;
  return nullptr;
}

std::vector<std::pair<const Node*, std::string>> Graph::consumers(const std::string& t) const {
  std::vector<std::pair<const Node*, std::string>> r;
  for (const Node& n : nodes)
    for (const auto& [port, name] : n.inputs)
      if (name == t) r.emplace_back(&n, port);
  return r;
}

// ---- shapes -----------------------------------------------------------------------------------

namespace detail {

Status eval_dim_expr(const std::string& expr, const DimLookup& lookup, int64_t* value,
                     const std::vector<std::pair<std::string, int64_t>>* dims) {
  if (value == nullptr) return invalid("argument 'value': expected an int64_t to write, got null");
  if (expr.empty()) return invalid("empty shape expression");
  const std::string self = "shape expression " + quote_text(expr);
  int64_t v = 1;
  char op = '*';
  size_t start = 0;
  while (start <= expr.size()) {
    size_t end = expr.find_first_of("*/", start);
    if (end == std::string::npos) end = expr.size();
    std::string term = expr.substr(start, end - start);
    term.erase(0, term.find_first_not_of(' '));
    term.erase(term.find_last_not_of(' ') + 1);
    if (term.empty()) return invalid(self + ": empty factor");
    int64_t f = 0;
    if (std::isdigit(static_cast<unsigned char>(term[0]))) {
      // NOTE: strict: every character a digit, and the value inside the element limit.
      const auto [p, ec] = std::from_chars(term.data(), term.data() + term.size(), f);
      if (ec == std::errc::result_out_of_range || (ec == std::errc() && f > kMaxElements))
        return invalid(self + ": number " + quote_text(term) + " above the element limit " +
                       kMaxElementsText);
      if (ec != std::errc() || p != term.data() + term.size())
        return invalid(self + ": bad number " + quote_text(term));
    } else {
      const int64_t* d = lookup(term);
      if (d == nullptr) {
        std::string names;
        size_t shown = 0;
        if (dims != nullptr)
          for (const auto& kv : *dims) {
            if (shown == 8) {
              names += ", ... (" + std::to_string(dims->size()) + " dims)";
              break;
            }
            names += (shown++ ? ", " : "") + quote_text(kv.first, 32);
          }
        return invalid(self + ": unknown dim " + quote_text(term) +
                       " (dims: " + (names.empty() ? std::string("none") : names) + ")");
      }
      f = *d;
    }
    if (f < 0) return invalid(self + ": negative factor");
    if (op == '/') {
      if (f == 0) return invalid(self + ": division by zero");
      v = v / f + (v % f != 0);  // NOTE: rounds up (block counts: "I/128"); cannot overflow
    } else if (!checked_mul(v, f, &v) || v > kMaxElements) {
      return invalid(self + ": the product passes the element limit " + kMaxElementsText);
    }
    if (end < expr.size()) op = expr[end];
    start = end + 1;
  }
  *value = v;
  return Status::Ok();
}

}  // namespace detail

Status eval_dim_expr(const std::string& expr,
                     const std::vector<std::pair<std::string, int64_t>>& dims, int64_t* value) {
  return detail::eval_dim_expr(
      expr,
      [&](const std::string& name) -> const int64_t* {
        const int64_t* found = nullptr;
        for (const auto& [k, d] : dims)
          if (k == name) found = &d;
        return found;
      },
      value, &dims);
}

// ---- order and validation ----------------------------------------------------------------------

Status topological_order(const Graph& g, std::vector<size_t>* order) {
  if (order == nullptr) return invalid("argument 'order': expected a vector to write, got null");
  std::map<std::string, size_t> writer;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& [port, t] : g.nodes[i].outputs) writer[t] = i;
  std::vector<int> pending(g.nodes.size(), 0);
  std::vector<std::vector<size_t>> readers(g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    std::set<size_t> deps;
    for (const auto& [port, t] : g.nodes[i].inputs) {
      auto it = writer.find(t);
      if (it != writer.end()) deps.insert(it->second);
    }
    pending[i] = static_cast<int>(deps.size());
    for (size_t d : deps) readers[d].push_back(i);
  }
  order->clear();
  // NOTE: the file's node order among ready nodes (stable, readable execution order): a min-heap
  // of indices, O(n log n) (sorting the ready list after every node was quadratic).
  std::priority_queue<size_t, std::vector<size_t>, std::greater<size_t>> ready;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (pending[i] == 0) ready.push(i);
  while (!ready.empty()) {
    const size_t i = ready.top();
    ready.pop();
    order->push_back(i);
    for (size_t r : readers[i])
      if (--pending[r] == 0) ready.push(r);
  }
  if (order->size() != g.nodes.size()) {
    std::vector<std::string> cyc;
    for (size_t i = 0; i < g.nodes.size(); ++i)
      if (pending[i] > 0) cyc.push_back("'" + g.nodes[i].name + "'");
    return invalid("cycle: nodes " + join(cyc) + " depend on each other");
  }
  return Status::Ok();
}

namespace detail {

Status validate_graph(Graph* g, const OpRegistry* registry, const std::set<std::string>* infer) {
  const OpRegistry& reg = registry != nullptr ? *registry : default_registry();

  // Tensors: names, dtypes, shapes.
  for (const auto& [name, t] : g->tensors) {
    if (name != t.name)
      return invalid("tensor '" + name + "': declared under another name '" + t.name + "'");
    if (t.shape.empty() || t.shape.size() > 4)
      return invalid("tensor " + quote_text(name) + ": expected rank 1..4, got " +
                     std::to_string(t.shape.size()));
    QFUSE_RETURN_IF_ERROR(check_shape("tensor " + quote_text(name), t.shape));
  }

  // Nodes: names, ops, ports, attributes; writers of tensors.
  std::set<std::string> node_names;
  std::map<std::string, std::string> writer;  // tensor -> node
  for (const std::string& in : g->inputs) {
    if (g->tensor(in) == nullptr)
      return invalid("graph input '" + in + "' is not declared in \"tensors\"");
    if (!writer.emplace(in, "").second) return invalid("graph input '" + in + "' listed twice");
  }
  for (const Node& n : g->nodes) {
    if (n.name.empty()) return invalid("a node of op '" + n.op + "' has no name");
    if (!node_names.insert(n.name).second) return invalid("node '" + n.name + "': name used twice");
    const OpDef* def = reg.find(n.op);
    if (def == nullptr)
      return invalid("node '" + n.name + "': unknown op '" + n.op + "' (ops: " + join(reg.names()) +
                     ")");
    QFUSE_RETURN_IF_ERROR(check_ports(n, *def, true));
    QFUSE_RETURN_IF_ERROR(check_ports(n, *def, false));
    for (const auto& [k, v] : n.attrs) QFUSE_RETURN_IF_ERROR(check_attr_value(n, *def, k, v));
    for (const auto& [port, t] : n.outputs) {
      auto [it, fresh] = writer.emplace(t, n.name);
      if (!fresh)
        return invalid("node '" + n.name + "': output '" + port + "' writes tensor '" + t +
                       "', which " +
                       (it->second.empty() ? std::string("is a graph input")
                                           : "node '" + it->second + "' also writes"));
    }
  }
  for (const Node& n : g->nodes)
    for (const auto& [port, t] : n.inputs)
      if (writer.count(t) == 0)
        return invalid("node '" + n.name + "': input '" + port + "' reads tensor '" + t +
                       "', which no node writes and which is not a graph input (dangling edge)");
  for (const std::string& out : g->outputs)
    if (writer.count(out) == 0)
      return invalid("graph output '" + out + "' is written by no node and is not an input");

  // In-place outputs (OpDef::in_place): the input they overwrite has no other reader and is
  // not a graph output (both would see it changed).
  for (const Node& n : g->nodes)
    for (const auto& [out_port, in_port] : reg.find(n.op)->in_place) {
      auto o = n.outputs.find(out_port);
      auto i = n.inputs.find(in_port);
      if (o == n.outputs.end() || i == n.inputs.end()) continue;
      for (const auto& [reader, port] : g->consumers(i->second))
        if (reader != &n || port != in_port)
          return invalid("node '" + n.name + "': output '" + out_port +
                         "' is written in place over input '" + in_port + "' (tensor '" +
                         i->second + "'), which node '" + reader->name + "' also reads");
      if (g->is_output(i->second))
        return invalid("node '" + n.name + "': output '" + out_port +
                       "' is written in place over input '" + in_port + "' (tensor '" + i->second +
                       "'), which is a graph output");
    }

  std::vector<size_t> order;
  QFUSE_RETURN_IF_ERROR(topological_order(*g, &order));

  // Types along every edge, in execution order.
  for (size_t i : order) {
    const Node& n = g->nodes[i];
    const OpDef& def = *reg.find(n.op);
    std::map<std::string, const TensorDesc*> in;
    for (const auto& [port, t] : n.inputs) {
      const TensorDesc* d = g->tensor(t);
      if (d == nullptr)
        return invalid("node '" + n.name + "': " + port_label(n, true, port) +
                       ": tensor is not declared");
      in[port] = d;
    }
    std::map<std::string, TensorDesc> expected;
    const Status st = def.infer(n, in, &expected);
    if (!st.ok()) return Status(st.code(), "node '" + n.name + "': " + st.message());
    for (const auto& [port, desc] : expected)
      QFUSE_RETURN_IF_ERROR(check_shape(
          "node '" + n.name + "': " + port_label(n, false, port) + ": inferred", desc.shape));
    for (const auto& [port, desc] : expected)
      if (n.outputs.count(port) == 0)
        return invalid("node '" + n.name + "': output '" + port + "' must be connected (op '" +
                       n.op + "' writes it here)");
    for (const auto& [port, t] : n.outputs) {
      auto e = expected.find(port);
      if (e == expected.end())
        return invalid("node '" + n.name + "': " + port_label(n, false, port) + ": op '" + n.op +
                       "' does not write this output here");
      auto have = g->tensors.find(t);
      if (have == g->tensors.end()) {
        if (infer == nullptr || infer->count(t) == 0)
          return invalid("node '" + n.name + "': " + port_label(n, false, port) +
                         ": tensor is not declared");
        TensorDesc d = e->second;
        d.name = t;
        g->tensors[t] = d;
        continue;
      }
      if (!have->second.same_type(e->second))
        return invalid("node '" + n.name + "': " + port_label(n, false, port) + ": " +
                       type_difference(e->second, have->second));
    }
  }

  // Every declared tensor is used.
  std::set<std::string> used(g->inputs.begin(), g->inputs.end());
  used.insert(g->outputs.begin(), g->outputs.end());
  for (const Node& n : g->nodes) {
    for (const auto& kv : n.inputs) used.insert(kv.second);
    for (const auto& kv : n.outputs) used.insert(kv.second);
  }
  for (const auto& [name, t] : g->tensors)
    if (used.count(name) == 0)
      return invalid("tensor '" + name + "' is declared but no node reads or writes it");
  return Status::Ok();
}

}  // namespace detail

Status validate(const Graph& g, const OpRegistry* registry) {
  Graph copy = g;  // NOTE: validate_graph only writes when asked to infer; nothing is inferred here
  return detail::validate_graph(&copy, registry, nullptr);
}

// ---- text form ----------------------------------------------------------------------------------

std::string to_text(const Graph& g) {
  std::ostringstream os;
  os << "graph '" << g.name << "'";
  if (!g.dims.empty()) {
    os << " (";
    for (size_t i = 0; i < g.dims.size(); ++i)
      os << (i ? " " : "") << g.dims[i].first << "=" << g.dims[i].second;
    os << ")";
  }
  os << "\n  inputs:\n";
  for (const std::string& in : g.inputs) {
    const TensorDesc* t = g.tensor(in);
    os << "    " << in << "  " << (t ? t->describe() : "?") << "\n";
  }
  std::vector<size_t> order;
  if (!topological_order(g, &order).ok()) {
    order.clear();
    for (size_t i = 0; i < g.nodes.size(); ++i) order.push_back(i);
  }
  size_t name_w = 4, op_w = 2;
  for (const Node& n : g.nodes) {
    name_w = std::max(name_w, n.name.size());
    op_w = std::max(op_w, n.op.size());
  }
  os << "  nodes:\n";
  for (size_t i : order) {
    const Node& n = g.nodes[i];
    os << "    " << n.name << std::string(name_w - n.name.size() + 2, ' ') << n.op
       << std::string(op_w - n.op.size() + 2, ' ');
    bool first = true;
    for (const auto& [p, t] : n.inputs) {
      os << (first ? "" : " ") << p << "=" << t;
      first = false;
    }
    os << " ->";
    for (const auto& [p, t] : n.outputs) {
      const TensorDesc* d = g.tensor(t);
      os << " " << p << "=" << t;
      if (d != nullptr) os << " " << d->describe();
    }
    if (!n.attrs.empty()) {
      os << "  {";
      bool f = true;
      for (const auto& [k, v] : n.attrs) {
        os << (f ? "" : ", ") << k << ": " << v;
        f = false;
      }
      os << "}";
    }
    os << "\n";
  }
  os << "  outputs: " << join(g.outputs) << "\n";
  return os.str();
}

}  // namespace qfuse::graph
