qfuse_family_tools(NAME act_quant SOURCES routines.cu demo.cpp)
