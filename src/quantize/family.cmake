qfuse_family(NAME quantize
  KERNELS quantize.cu dynamic_per_tensor.cu register.cpp
  GRAPH graph_ops.cpp)
