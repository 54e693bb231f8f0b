// The bf16 wgmma instructions of the MLA decode kernels, as inline PTX (both operands from shared
// memory through matrix descriptors, or A from registers), fp32 accumulate. The primitives they
// work with (TMA, mbarriers, named barriers, fences, descriptors) are src/common/sm90.cuh's, and
// its file comment describes the shared-memory operand layouts.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/sm90.cuh"

namespace qfuse::mla {

using namespace ::qfuse::sm90;

/// D[64 x 16] (+)= A[64 x 16] * B[16 x 16], bf16 operands from shared memory, fp32 accumulate.
/// kTransA: 0 = A K-major, 1 = A MN-major. B is K-major. scale_d 0 overwrites D.
template <int kTransA>
__device__ __forceinline__ void wgmma_m64n16(float (&d)[8], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %10, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16"
      " {%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1, %11, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7])
      : "l"(da), "l"(db), "r"(scale_d), "n"(kTransA));
}

/// D[64 x 32] (+)= A[64 x 16] * B[16 x 32]; as wgmma_m64n16.
template <int kTransA>
__device__ __forceinline__ void wgmma_m64n32(float (&d)[16], uint64_t da, uint64_t db,
                                             int scale_d) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16"
      " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15},"
      " %16, %17, p, 1, 1, %19, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15])
      : "l"(da), "l"(db), "r"(scale_d), "n"(kTransA));
}

template <int kN, int kTransA>
__device__ __forceinline__ void wgmma_bf16(float (&d)[kN / 2], uint64_t da, uint64_t db,
                                           int scale_d) {
  if constexpr (kN == 16)
    wgmma_m64n16<kTransA>(d, da, db, scale_d);
  else
    wgmma_m64n32<kTransA>(d, da, db, scale_d);
}

/// D[64 x 16] (+)= A[64 x 16] * B[16 x 16] with A from registers (16-bit pairs a0..a3: rows g /
/// g + 8, columns 2 qd + {0, 1} / + 8 of the thread's warp slice) and B K-major in shared memory.
/// kF16: both operands fp16 (the FP8 cache's consumer, mainloop_fp8.cuh), else bf16.
#define QFUSE_MLA_WGMMA_RS_N16(TYPE)                                                        \
  asm volatile(                                                                             \
      "{\n .reg .pred p;\n setp.ne.b32 p, %13, 0;\n"                                        \
      "wgmma.mma_async.sync.aligned.m64n16k16.f32." TYPE "." TYPE                           \
      " {%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, p, 1, 1, 0;\n}\n"        \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), \
        "+f"(d[7])                                                                          \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d))
#define QFUSE_MLA_WGMMA_RS_N32(TYPE)                                                            \
  asm volatile(                                                                                 \
      "{\n .reg .pred p;\n setp.ne.b32 p, %21, 0;\n"                                            \
      "wgmma.mma_async.sync.aligned.m64n32k16.f32." TYPE "." TYPE                               \
      " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15},"                \
      " {%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}\n"                                            \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),     \
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), \
        "+f"(d[14]), "+f"(d[15])                                                                \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d))

template <bool kF16 = false>
__device__ __forceinline__ void wgmma_rs_m64n16(float (&d)[8], const uint32_t* a, uint64_t db,
                                                int scale_d) {
  if constexpr (kF16)
    QFUSE_MLA_WGMMA_RS_N16("f16");
  else
    QFUSE_MLA_WGMMA_RS_N16("bf16");
}

template <bool kF16 = false>
__device__ __forceinline__ void wgmma_rs_m64n32(float (&d)[16], const uint32_t* a, uint64_t db,
                                                int scale_d) {
  if constexpr (kF16)
    QFUSE_MLA_WGMMA_RS_N32("f16");
  else
    QFUSE_MLA_WGMMA_RS_N32("bf16");
}
#undef QFUSE_MLA_WGMMA_RS_N16
#undef QFUSE_MLA_WGMMA_RS_N32

template <int kN, bool kF16 = false>
__device__ __forceinline__ void wgmma_rs(float (&d)[kN / 2], const uint32_t* a, uint64_t db,
                                         int scale_d) {
  if constexpr (kN == 16)
    wgmma_rs_m64n16<kF16>(d, a, db, scale_d);
  else
    wgmma_rs_m64n32<kF16>(d, a, db, scale_d);
}

/// D[64 x 64] (+)= A[64 x 16] * B[16 x 64], both operands K-major in shared memory (descriptors),
/// fp32 accumulate. Fragment: register 4 j + e holds row 16 * warp + g + 8 * (e >> 1), column
/// 8 j + 2 qd + (e & 1) (g = lane / 4, qd = lane % 4).
__device__ __forceinline__ void wgmma_ss_m64n64(float (&d)[32], uint64_t da, uint64_t db,
                                                int scale_d) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16"
      " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31},"
      " %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(scale_d));
}

// The 128 fp32 accumulator operands of an m64n256 wgmma (operand numbers 0..127 and their
// constraints), shared by its two forms below.
#define QFUSE_WGMMA_D128_REGS                                                                     \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "   \
  "%20, "                                                                                         \
  "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, "    \
  "%39, "                                                                                         \
  "%40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, "    \
  "%58, "                                                                                         \
  "%59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, "    \
  "%77, "                                                                                         \
  "%78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "    \
  "%96, "                                                                                         \
  "%97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, " \
  "%113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"
#define QFUSE_WGMMA_D128_OPS(d)                                                                   \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
      "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),    \
      "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]),  \
      "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]),  \
      "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),  \
      "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),  \
      "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]),  \
      "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),  \
      "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),  \
      "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]),  \
      "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]),  \
      "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]),  \
      "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]),  \
      "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]),  \
      "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]),          \
      "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]),         \
      "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]),         \
      "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]),         \
      "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])

/// D[64 x 256] (+)= A[64 x 16] * B[16 x 256]: A from registers (the bf16x2 fragment of
/// wgmma_rs_m64n16), B MN-major in shared memory (128-byte swizzle, LBO = the stride of 64 columns,
/// SBO = the stride of 8 K rows). Fragment as wgmma_ss_m64n64 with j in [0, 32).
__device__ __forceinline__ void wgmma_rs_m64n256_tb(float (&d)[128], const uint32_t (&a)[4],
                                                    uint64_t db, int scale_d) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %133, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 " QFUSE_WGMMA_D128_REGS
      ", {%128, %129, %130, %131}, %132, p, 1, 1, 1;\n}\n"
      : QFUSE_WGMMA_D128_OPS(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
}

/// The same with A K-major in shared memory.
__device__ __forceinline__ void wgmma_ss_m64n256_tb(float (&d)[128], uint64_t da, uint64_t db,
                                                    int scale_d) {
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 " QFUSE_WGMMA_D128_REGS
      ", %128, %129, p, 1, 1, 0, 1;\n}\n"
      : QFUSE_WGMMA_D128_OPS(d)
      : "l"(da), "l"(db), "r"(scale_d));
}

#undef QFUSE_WGMMA_D128_REGS

#undef QFUSE_WGMMA_D128_OPS

}  // namespace qfuse::mla
