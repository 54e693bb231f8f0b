# Sanitizer and fuzzing builds (issue 12; `make sanitize`, `make fuzz`, docs/hardening.md).
#
#   QFUSE_SANITIZE=ON  host C++ (library, tests, CLI) with AddressSanitizer + UBSan, every report
#                      fatal. CUDA translation units stay uninstrumented (nvcc's host compiler);
#                      only the sanitizer runtimes are linked into them.
#   QFUSE_FUZZ=ON      also libFuzzer coverage on the host C++ and the fuzz/ targets (clang only).
#
# Included before the library target is defined, so the options reach every target below.
option(QFUSE_SANITIZE "Build host C++ with AddressSanitizer and UBSan" OFF)
option(QFUSE_FUZZ "Build the libFuzzer targets in fuzz/ (needs clang, implies QFUSE_SANITIZE)" OFF)

if(QFUSE_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "QFUSE_FUZZ needs clang++ (libFuzzer); configure with "
                        "-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_CUDA_HOST_COMPILER=g++")
  endif()
  set(QFUSE_SANITIZE ON)
endif()

if(QFUSE_SANITIZE)
  set(qfuse_san_flags -fsanitize=address,undefined -fno-sanitize-recover=all
                      -fno-omit-frame-pointer)
  if(QFUSE_FUZZ)
    list(APPEND qfuse_san_flags -fsanitize=fuzzer-no-link)
  endif()
  string(REPLACE ";" "," qfuse_san_cuda "${qfuse_san_flags}")
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:${qfuse_san_flags}>")
  add_link_options("$<$<LINK_LANGUAGE:CXX>:-fsanitize=address,undefined>"
                   "$<$<LINK_LANGUAGE:CUDA>:-Xcompiler=-fsanitize=address,-fsanitize=undefined>")
endif()
