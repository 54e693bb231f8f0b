qfuse_family_tools(NAME merge_states SOURCES routines.cu demo.cpp)
