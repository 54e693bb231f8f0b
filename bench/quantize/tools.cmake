qfuse_family_tools(NAME quantize SOURCES routines.cu)
