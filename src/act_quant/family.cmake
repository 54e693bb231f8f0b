qfuse_family(NAME act_quant
  KERNELS silu_mul_quant.cu reference.cpp register.cpp
  GRAPH graph_ops.cpp)
