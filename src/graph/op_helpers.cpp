// Helpers of the graph ops: op_helpers.h.
#include "graph/op_helpers.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "qfuse/quant/capabilities.h"
#include "qfuse/quant/reference.h"
#include "qfuse/quant/rules.h"

namespace qfuse::graph::detail {

namespace {
std::string dtype_list(const std::vector<DType>& v) {
  std::string r;
  for (DType d : v) {
    if (!r.empty()) r += "|";
    r += to_string(d);
  }
  return r;
}
}  // namespace

TensorDesc make_desc(DType dtype, std::vector<int64_t> shape, QuantSpec q) {
  TensorDesc d;
  d.dtype = dtype;
  d.shape = std::move(shape);
  d.quant = q;
  return d;
}

Status expect_input(const Node& n, const std::map<std::string, const TensorDesc*>& in,
                    const std::string& port, const std::vector<DType>& dtypes, size_t rank,
                    const TensorDesc** out) {
  auto it = in.find(port);
  if (it == in.end()) return invalid("input '" + port + "' is required but not connected");
  const TensorDesc& d = *it->second;
  if (std::find(dtypes.begin(), dtypes.end(), d.dtype) == dtypes.end())
    return invalid(port_label(n, true, port) + ": expected dtype " + dtype_list(dtypes) + ", got " +
                   std::string(to_string(d.dtype)));
  if (d.shape.size() != rank)
    return invalid(port_label(n, true, port) + ": expected rank " + std::to_string(rank) +
                   ", got " + std::to_string(d.shape.size()) + " " + shape_text(d.shape));
  *out = &d;
  return Status::Ok();
}

/// A plain (unquantized) input: a quantized tensor here would be read as if it were not.
Status expect_plain(const Node& n, const std::string& port, const TensorDesc& d) {
  if (d.quant.kind != QuantKind::kNone)
    return invalid(port_label(n, true, port) + ": expected quant none, got " + to_string(d.quant) +
                   " (op '" + n.op + "' reads plain values)");
  return Status::Ok();
}

Status dtype_attr(const Node& n, const std::string& key, DType fallback,
                  const std::vector<DType>& allowed, DType* out) {
  const std::string v = n.attr(key);
  *out = fallback;
  if (!v.empty()) *out = *parse_dtype(v);  // checked by validate()
  if (std::find(allowed.begin(), allowed.end(), *out) == allowed.end())
    return invalid("attr '" + key + "': expected " + dtype_list(allowed) + ", got " +
                   std::string(to_string(*out)));
  return Status::Ok();
}

Status infer_optional_quant_output(const Node& n,
                                   const std::map<std::string, const TensorDesc*>& in,
                                   const std::string& op_for_caps, int64_t rows, int64_t cols,
                                   std::map<std::string, TensorDesc>* out) {
  QuantSpec spec;
  QFUSE_RETURN_IF_ERROR(node_quant_spec(n, &spec));
  if (spec.kind != QuantKind::kNone && !fused_output_quant_supported(op_for_caps, spec))
    return invalid("attr 'quant': op '" + n.op + "' does not write " + to_string(spec) +
                   " (capability table" + (op_for_caps != n.op ? ", " + op_for_caps : "") + ")");
  if (n.attrs.count("out_dtype") && spec.kind != QuantKind::kNone)
    return invalid("attr 'out_dtype': only for quant none");
  DType none_dtype = DType::kBF16;
  QFUSE_RETURN_IF_ERROR(dtype_attr(n, "out_dtype", DType::kBF16, kFloatDtypes, &none_dtype));
  std::map<std::string, const TensorDesc*> q_in;  // the quantizer's own inputs
  for (const auto& [p, d] : in)
    if (p == "scale" || p == "scale_ub") q_in[p] = d;
  return infer_quantized_output(n, q_in, spec, rows, cols, none_dtype, out);
}

Status require_quant(const Node& n, const std::string& op_for_caps, QuantSpec* spec) {
  if (n.attrs.count("quant") == 0) return invalid("attr 'quant' is required by op '" + n.op + "'");
  QFUSE_RETURN_IF_ERROR(node_quant_spec(n, spec));
  if (!fused_output_quant_supported(op_for_caps, *spec))
    return invalid("attr 'quant': op '" + op_for_caps + "' does not write " + to_string(*spec) +
                   " (capability table)");
  return Status::Ok();
}

const std::vector<DType> kFloatDtypes = {DType::kBF16, DType::kF16, DType::kF32};

std::vector<DType> cap_inputs(const char* op) {
  const OpCapability* c = find_op_capability(op);
  return c != nullptr ? c->input_dtypes : std::vector<DType>{};
}

Status int_attr(const Node& n, const std::string& key, int64_t fallback, int64_t* out) {
  *out = fallback;
  const std::string v = n.attr(key);
  if (v.empty()) return Status::Ok();
  size_t used = 0;
  long long x = 0;
  try {
    x = std::stoll(v, &used);
  } catch (...) {
    used = 0;
  }
  if (used != v.size()) return invalid("attr '" + key + "': expected an integer, got '" + v + "'");
  *out = x;
  return Status::Ok();
}

float host_element(const HostTensor& t, int64_t i) {
  switch (t.desc.dtype) {
    case DType::kBF16: {
      uint16_t b;
      std::memcpy(&b, t.data.data() + 2 * i, 2);
      return ref::bf16_value(b);
    }
    case DType::kF16: {
      uint16_t b;
      std::memcpy(&b, t.data.data() + 2 * i, 2);
      return ref::f16_value(b);
    }
    case DType::kF32: {
      float f;
      std::memcpy(&f, t.data.data() + 4 * i, 4);
      return f;
    }
    case DType::kE4M3:
      return rules::e4m3_value(t.data[i]);
    default:
      return NAN;
  }
}

float host_scalar(const HostRunArgs& a, const char* port, float fallback) {
  auto it = a.in.find(port);
  return it == a.in.end() ? fallback : host_element(*it->second, 0);
}

void host_store(HostTensor* t, int64_t i, float v) {
  switch (t->desc.dtype) {
    case DType::kBF16: {
      const uint16_t b = ref::bf16_bits(v);
      std::memcpy(t->data.data() + 2 * i, &b, 2);
      break;
    }
    case DType::kF16: {
      const uint16_t b = ref::f16_bits(v);
      std::memcpy(t->data.data() + 2 * i, &b, 2);
      break;
    }
    case DType::kF32:
      std::memcpy(t->data.data() + 4 * i, &v, 4);
      break;
    case DType::kE4M3:
      t->data[i] = ref::e4m3_encode(v);
      break;
    default:  // other byte types (packed e2m1, ue8m0): the value is the raw byte
      t->data[i] = static_cast<uint8_t>(static_cast<int>(v) & 0xFF);
      break;
  }
}

Status host_write_quantized(const HostRunArgs& a, const QuantSpec& spec,
                            const std::vector<float>& y, int64_t rows, int64_t cols) {
  HostTensor* out = a.out.at("out");
  if (spec.kind == QuantKind::kNone) {
    for (int64_t i = 0; i < rows * cols; ++i) host_store(out, i, y[i]);
    return Status::Ok();
  }
  ref::RefScalars s;
  s.scale = host_scalar(a, "scale", 1.0f);
  s.scale_ub = host_scalar(a, "scale_ub", INFINITY);
  const ref::QuantResult r = ref::quantize(y.data(), rows, cols, spec, s);
  QFUSE_RETURN_IF_ERROR(r.status);
  if (r.out.size() != out->data.size())
    return Status(StatusCode::kInternal, "host quantize wrote " + std::to_string(r.out.size()) +
                                             " bytes, tensor '" + out->desc.name + "' holds " +
                                             std::to_string(out->data.size()));
  out->data = r.out;
  auto sc = a.out.find("scales");
  if (sc != a.out.end()) {
    if (r.scales.size() != sc->second->data.size())
      return Status(StatusCode::kInternal,
                    "host quantize wrote " + std::to_string(r.scales.size()) +
                        " scale bytes, tensor '" + sc->second->desc.name + "' holds " +
                        std::to_string(sc->second->data.size()));
    sc->second->data = r.scales;
  }
  return Status::Ok();
}

Status device_quant_output(const DeviceRunArgs& a, QuantOutput* q) {
  QFUSE_RETURN_IF_ERROR(node_quant_spec(*a.node, &q->spec));
  q->out = a.out.at("out");
  auto sc = a.out.find("scales");
  if (sc != a.out.end()) q->scales = sc->second;
  auto s = a.in.find("scale");
  if (s != a.in.end()) q->scale = static_cast<const float*>(s->second.data);
  auto ub = a.in.find("scale_ub");
  if (ub != a.in.end()) q->scale_ub = static_cast<const float*>(ub->second.data);
  return Status::Ok();
}

}  // namespace qfuse::graph::detail
