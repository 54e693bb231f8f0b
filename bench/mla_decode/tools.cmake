qfuse_family_tools(NAME mla_decode SOURCES routines.cu demo.cpp)
