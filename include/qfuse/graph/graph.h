// The op graph the fusion passes rewrite and the executor runs (SPEC §6, docs/graph.md).
//
// Nodes are qfuse ops (quantize, silu_and_mul, silu_mul_quant, merge_states, attention ops that
// register themselves) and GEMM nodes; each names its input and output tensors by port
// ("node 'act': input 'x' reads tensor 'h'"). Edges are tensors with a dtype, a shape (in
// storage units, as TensorRef counts them: NVFP4 values are [T, H/2] e2m1x2) and the
// quantization kind that wrote them (QuantSpec::none() for plain tensors and for scale buffers).
//
// A graph is valid (validate()) when every op is registered, every port and attribute is known
// and well-typed, every tensor has exactly one writer (a node or the graph's inputs), nothing
// is read that nobody writes, there is no cycle, and every node's op accepts the dtypes, shapes
// and quantization kinds of what it reads and writes exactly the tensors declared for its
// outputs. Errors name the node and the port, attribute or tensor:
//   "node 'act': input 'x' (tensor 'h'): expected dtype bf16|fp16, got fp32".
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "qfuse/core/dtype.h"
#include "qfuse/core/status.h"
#include "qfuse/quant/kind.h"

namespace qfuse::graph {

class OpRegistry;

/// A tensor (an edge of the graph).
struct TensorDesc {
  std::string name;
  DType dtype = DType::kBF16;
  std::vector<int64_t> shape;  // storage units of `dtype`
  /// Quantized values: the spec that wrote them (what a consumer needs to read them). Plain
  /// tensors and scale buffers: none.
  QuantSpec quant;
  /// Optional symbolic form of `shape` as written in JSON ("T", "2*I", "7168"); empty when the
  /// shape was inferred. Kept so that a serialized graph can still be resized with new dims.
  std::vector<std::string> shape_expr;

  int64_t numel() const;
  size_t bytes() const;
  /// "[64, 2048] e4m3 fp8_group128:col_tma:ue8m0_packed"
  std::string describe() const;
  /// dtype, shape and quant agree (names and shape_expr are not compared).
  bool same_type(const TensorDesc& o) const {
    return dtype == o.dtype && shape == o.shape && quant == o.quant;
  }
  bool operator==(const TensorDesc& o) const {
    return name == o.name && same_type(o) && shape_expr == o.shape_expr;
  }
};

/// An op application. Ports map to tensor names; attrs are strings (typed by the op's
/// declaration: numbers are written as decimal text).
struct Node {
  std::string name;
  std::string op;
  std::map<std::string, std::string> inputs;   // port -> tensor
  std::map<std::string, std::string> outputs;  // port -> tensor
  std::map<std::string, std::string> attrs;

  /// The attribute's value, or `fallback` when it is not set.
  std::string attr(const std::string& key, const std::string& fallback = "") const;
  bool operator==(const Node& o) const {
    return name == o.name && op == o.op && inputs == o.inputs && outputs == o.outputs &&
           attrs == o.attrs;
  }
};

struct Graph {
  std::string name;
  /// Named dimensions the JSON shapes were resolved with (in the order given), and the smaller
  /// set the host reference path uses (may be empty).
  std::vector<std::pair<std::string, int64_t>> dims;
  std::vector<std::pair<std::string, int64_t>> host_dims;
  std::map<std::string, TensorDesc> tensors;
  std::vector<std::string> inputs;   // tensors the caller provides
  std::vector<std::string> outputs;  // tensors the caller reads after a run
  std::vector<Node> nodes;           // any order; validate() checks for cycles

  const TensorDesc* tensor(const std::string& name) const;
  const Node* node(const std::string& name) const;
  bool is_input(const std::string& tensor) const;
  bool is_output(const std::string& tensor) const;
  /// The node writing `tensor` (nullptr for graph inputs and unknown tensors).
  const Node* producer(const std::string& tensor) const;
  /// (node, port) pairs that read `tensor`, in node order.
  std::vector<std::pair<const Node*, std::string>> consumers(const std::string& tensor) const;

  bool operator==(const Graph& o) const {
    return name == o.name && dims == o.dims && host_dims == o.host_dims && tensors == o.tensors &&
           inputs == o.inputs && outputs == o.outputs && nodes == o.nodes;
  }
};

/// Checks the graph against `registry` (nullptr: default_registry()); see the file comment.
Status validate(const Graph& g, const OpRegistry* registry = nullptr);

/// Node indices in an execution order (producers before consumers); an error naming the nodes
/// of a cycle, or a tensor read before anything writes it.
Status topological_order(const Graph& g, std::vector<size_t>* order);

/// A readable multi-line form for `qfuse fuse`:
///   inputs:  h [64, 4096] bf16, ...
///   act     silu_and_mul    x=gu -> out=y
///   ...
std::string to_text(const Graph& g);

/// Evaluates a shape expression: decimal integers and dim names joined by '*' and '/', left to
/// right, '/' rounding up ("2*I", "H*D", "I/128"). Errors name the expression and the unknown dim.
Status eval_dim_expr(const std::string& expr,
                     const std::vector<std::pair<std::string, int64_t>>& dims, int64_t* value);

}  // namespace qfuse::graph
