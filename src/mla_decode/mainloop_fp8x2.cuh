// The FP8-cache consumer split over two warpgroups (traits.cuh: TcFp8X2Traits; kernel.cuh:
// mla_tc_fp8x2_kernel). mainloop_fp8.cuh's consumer is bound by its own instruction stream (one
// warp per scheduler, the conversions on the ALU pipe: bench/NOTES.md M3, M11); here each tile's
// work is halved between two warpgroups, so every scheduler has two consumer warps and each
// converts half the codes:
//
//   QK  consumer c: boxes 4 c .. 4 c + 3 and k-steps 2 c, 2 c + 1 of the rope box (8), from its
//       own A registers (mainloop_fp8.cuh's conversion and Q layout); its partial S^T goes to
//       xs[c] and the other's is added (the same fp32 sum in both: a + b == b + a), so both hold
//       the whole tile's scores.
//   softmax  both, redundantly and identically (each warpgroup its own column-max / sum arrays);
//       consumer 0 writes P.
//   PV  consumer c: m-tiles 4 c .. 4 c + 3 (latent columns 8 c .. 8 c + 7 of each 16-column group
//       of DMapRS: 8 of the 16 bytes a token's chunk holds).
//
// Named barriers: 1 + c (consumer c's warpgroup), kBarBoth (both consumers, 256 threads): after
// the partial S^T are written, and after P is written. The second also orders the reuse of xs
// and P: a consumer waits for its PV products (wgmma_wait<0>) before its next QK, so when
// consumer 0 writes the next P past the next exchange, both PV products of this tile have
// completed. empty[s] counts 8 warps; q_empty (4) is consumer 0's, after the last exchange of a
// piece (both QK products done). Q is prepared by both warpgroups (prepare_q_f16 over 256
// threads).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "mla_decode/mainloop_fp8.cuh"

namespace qfuse::mla {

constexpr int kBarBoth = 3;

__device__ __forceinline__ uint2 lds64(const uint8_t* p) {
  return *reinterpret_cast<const uint2*>(p);
}

template <class Tr, class Epi>
__device__ void consumer_fp8_x2(const TcParams& tp, const TcSmem<Tr>& sm, int rb, int part, int c) {
  static_assert(Tr::kConsumers == 2, "two consumer warpgroups");
  const DecodeParams& p = tp.p;
  constexpr int R = Tr::kRows, NC = R / 4, NS = R / 2;
  const int tid2 = threadIdx.x - 128;  // 0 .. 255 over both consumers
  const int tid = tid2 & 127;          // within this consumer's warpgroup
  const int w = tid >> 5, lane = tid & 31, g = lane >> 2, qd = lane & 3;
  const int bar_own = 1 + c;
  const float k_scale = __ldg(p.k_scale);
  const float scale_log2 = p.scale_log2 * k_scale;  // times 2^(8 - k) per piece (prepare_q_f16)
  const uint32_t q_addr = smem_addr(sm.q());
  const uint32_t p_addr = smem_addr(sm.p());
  uint8_t* p_gen = sm.p();
  float* red_max = sm.red(2 * c);
  float* red_sum = sm.red(2 * c + 1);
  float* xs_own = sm.xs(c) + tid * NS;
  const float* xs_other = sm.xs(1 - c) + tid * NS;
  const ColumnMap<R> cm(qd);
  // This thread's K rows (tokens 16 w + g, + 8) and their swizzled 16-byte chunk (qd).
  const int r0 = 16 * w + g, r1 = r0 + 8;
  const int k_off0 = r0 * 64 + ((qd ^ ((r0 >> 1) & 3)) << 4);
  const int k_off1 = r1 * 64 + ((qd ^ ((r1 >> 1) & 3)) << 4);
  // Its V columns: box 2 w + g / 4, chunk g % 4 of tokens 16 kk + 2 qd + {0, 1, 8, 9}; bytes
  // 8 c .. 8 c + 7 of the chunk (m-tiles 4 c .. 4 c + 3).
  const int v_box = (2 * w + (g >> 2)) * Tr::kBoxBytes + 8 * c;
  int n = 0, nq = 0;
  for_each_piece(p, part, [&](const Piece& pc, const Piece&) {
    float o[4][NS], m[NC], l[NC];
    int limit[NC];
    piece_begin<R>(p, pc, rb, cm, o, m, l, limit);
    float piece_scale_log2 = 0.0f;
    for (int t = pc.t_begin; t < pc.t_end; ++t, ++n) {
      const int st = n % Tr::kStages;
      if (t == pc.t_begin) {
        mbar_wait(sm.q_full(), nq & 1);
        // NOTE: scratch in consumer 0's red_max: its last reads (the previous tile's softmax)
        // precede the previous tile's P barrier, which both warpgroups have passed.
        const int k =
            prepare_q_f16<Tr, 256, kBarBoth>(sm.q(), tid2, reinterpret_cast<uint32_t*>(sm.red(0)));
        piece_scale_log2 = scale_log2 * exp2i(8 - k);
        fence_proxy_async_shared();
        named_sync(kBarBoth, 256);
      }
      mbar_wait(sm.full(st), (n / Tr::kStages) & 1);
      const uint8_t* stage = sm.kv(st);

      // Partial S^T = K Q^T over this consumer's boxes: 4 whole boxes (two 16-byte loads give the
      // A fragments of their 4 k-steps), then 2 k-steps of the rope box (two 8-byte loads).
      float s[NS];
#pragma unroll
      for (int k = 0; k < NS; ++k) s[k] = 0.0f;
      fence_regs(s);
      uint32_t a[2][16];
#pragma unroll
      for (int u = 0; u < 5; ++u) {
        uint32_t(&A)[16] = a[u & 1];
        if (u >= 2) {
          wgmma_wait<1>();  // unit u - 2's products have read this register set
          fence_regs(A);
        }
        if (u < 4) {
          const int kb = 4 * c + u;
          const uint8_t* box = stage + kb * Tr::kBoxBytes;
          const uint4 x0 = lds128(box + k_off0), x1 = lds128(box + k_off1);
#pragma unroll
          for (int ks = 0; ks < 4; ++ks) k_step_fragment(&A[4 * ks], word(x0, ks), word(x1, ks));
          fence_regs(A);
          wgmma_fence();
#pragma unroll
          for (int ks = 0; ks < 4; ++ks) {
            const uint64_t db = sw128_desc(q_addr + kb * Tr::kQBoxBytes + ks * 32, 16, 1024);
            wgmma_rs<R, true>(s, &A[4 * ks], db, (u | ks) != 0 ? 1 : 0);
          }
        } else {
          const uint8_t* box = stage + (Tr::kBoxes - 1) * Tr::kBoxBytes;
          const uint2 x0 = lds64(box + k_off0 + 8 * c), x1 = lds64(box + k_off1 + 8 * c);
#pragma unroll
          for (int ks = 0; ks < 2; ++ks)
            k_step_fragment(&A[4 * ks], ks == 0 ? x0.x : x0.y, ks == 0 ? x1.x : x1.y);
          fence_regs(A);
          wgmma_fence();
#pragma unroll
          for (int ks = 0; ks < 2; ++ks) {
            const uint64_t db = sw128_desc(
                q_addr + (Tr::kBoxes - 1) * Tr::kQBoxBytes + (2 * c + ks) * 32, 16, 1024);
            wgmma_rs<R, true>(s, &A[4 * ks], db, 1);
          }
        }
        wgmma_commit();
        fence_regs(A);
      }
      wgmma_wait<0>();
      fence_regs(s);
      fence_regs(a[0]);
      fence_regs(a[1]);

      // Both partial sums in both warpgroups (the same fragment layout: thread tid of each holds
      // the same scores).
#pragma unroll
      for (int k = 0; k < NS; k += 4)
        *reinterpret_cast<float4*>(xs_own + k) = make_float4(s[k], s[k + 1], s[k + 2], s[k + 3]);
      named_sync(kBarBoth, 256);
#pragma unroll
      for (int k = 0; k < NS; k += 4) {
        const float4 v = *reinterpret_cast<const float4*>(xs_other + k);
        s[k] += v.x;
        s[k + 1] += v.y;
        s[k + 2] += v.z;
        s[k + 3] += v.w;
      }
      if (c == 0 && t == pc.t_end - 1 && lane == 0) mbar_arrive(sm.q_empty());

      tile_max<R>(s, t * kTileTokens + 16 * w + g, limit, cm, red_max, w, g);
      named_sync(bar_own, 128);
      float alpha[NC];
      tile_softmax<R, true>(s, m, l, alpha, cm, red_max, piece_scale_log2, p_gen, w, g, c == 0);
      rescale<R, 4>(o, alpha);
      fence_proxy_async_shared();
      named_sync(kBarBoth, 256);  // P written (and both warpgroups' reads of xs and red_max done)
      fence_regs(o);

      // O^T += V^T P^T over this consumer's 4 m-tiles: per k-step, four 8-byte loads (one per
      // token) give the A fragments of its m-tiles.
      uint32_t av[2][16];
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        uint2 y[4];
#pragma unroll
        for (int cc = 0; cc < 4; ++cc) {
          const int tok = 16 * kk + 2 * qd + (cc & 1) + 8 * (cc >> 1);
          y[cc] = lds64(stage + v_box + tok * 64 + (((g & 3) ^ ((tok >> 1) & 3)) << 4));
        }
        uint32_t(&A)[16] = av[kk & 1];
        if (kk >= 2) {
          wgmma_wait<1>();
          fence_regs(A);
        }
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) {
          // m-tile 4 c + jj: bytes 2 (jj & 1), + 1 of word jj / 2 of the 8 bytes.
          const bool hi = (jj >> 1) != 0;
          v_tile_fragment(&A[4 * jj], hi ? y[0].y : y[0].x, hi ? y[1].y : y[1].x,
                          hi ? y[2].y : y[2].x, hi ? y[3].y : y[3].x, 2 * (jj & 1));
        }
        fence_regs(A);
        wgmma_fence();
        const uint64_t db = sw128_desc(p_addr + kk * 32, 16, 1024);
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) wgmma_rs<R, true>(o[jj], &A[4 * jj], db, 1);
        wgmma_commit();
        fence_regs(A);
      }
      wgmma_wait<0>();
      fence_regs(o);
      fence_regs(av[0]);
      fence_regs(av[1]);
      if (lane == 0) mbar_arrive(sm.empty(st));  // this warp's loads from the stage are done
    }
    if (pc.t_end > pc.t_begin) ++nq;
    float scale[NC], lse[NC];
    piece_stats<R>(l, m, cm, red_sum, w, g, k_scale * 256.0f, scale, lse, bar_own);
    store_fragment<Epi, R, DMapRS, 4>(p, EpiCtx{pc.b, pc.slot}, rb * R, o, scale, lse, 4 * c,
                                      c == 0);
  });
}

}  // namespace qfuse::mla
