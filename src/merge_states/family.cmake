qfuse_family(NAME merge_states
  KERNELS merge_states.cpp merge_bf16.cu merge_f16.cu merge_f32.cu reference.cpp register.cpp
  GRAPH graph_ops.cpp)
