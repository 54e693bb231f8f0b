qfuse_family(NAME quantize
  KERNELS quantize.cu register.cpp
  GRAPH graph_ops.cpp)
