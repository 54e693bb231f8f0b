# The tensor pipe's rate per wgmma shape (`qfuse bench --suite wgmma_rate`, bench/NOTES.md M25):
# CuTe's GMMA atoms, so the tools see the CUTLASS headers too.
qfuse_family_tools(NAME tensor_rate SOURCES wgmma_rate.cu)
target_include_directories(qfuse_tools SYSTEM PRIVATE ${QFUSE_CUTLASS_INCLUDE})
