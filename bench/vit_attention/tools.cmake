qfuse_family_tools(NAME vit_attention SOURCES routines.cu demo.cpp calibrate.cu)
