// An opt-in timeline of the FP8 tensor-core ViT kernel (attention_tc.cuh), for finding where a
// block's time goes beyond its key-tile steps (bench/NOTES.md V37). Built only with the CMake
// option QFUSE_VIT_TRACE (a separate build: `make trace-build`); a release build has none of it.
//
// Block b (linear index, below kBlocks) writes kStride words at buffer + b * kStride: a header
// (Head) and, per segment i < kStreamKMaxSegments, kSegWords words at kHeadWords + i *
// kSegWords (Seg): SM clock64() values, globaltimer nanoseconds for the block's start and end.
// Every call overwrites the same words; the process writes the last call's words to
// $QFUSE_VIT_TRACE_OUT (default /tmp/qfuse_vit_trace.bin) at exit; scripts/vit_trace.py reads it.
#pragma once

#include <cstdint>

namespace qfuse::vit::trace {

constexpr int kBlocks = 4096;
enum Head : int {
  kGtStart,   // globaltimer at the kernel's entry (consumer 0's first thread)
  kGtEnd,     // globaltimer after its last segment
  kClkStart,  // clock64 at the entry
  kClkSetup,  // after the barriers' init and the segment list
  kClkEnd,    // after the last segment
  kSegCount,  // segments listed
  kSmId,      // %smid
  kHeadWords = 8
};
enum Seg : int {
  kInfo,      // key tiles | (split ? 1 << 16 : 0)
  kBegin,     // the consumer's loop top
  kQReady,    // Q arrived (q_full)
  kFirst,     // the first tile's softmax done (the pipeline filled)
  kLoopEnd,   // the last P V done
  kMergeEnd,  // the stream-K merge done (or the partial handed over)
  kStoreEnd,  // the output stored (as kMergeEnd where the block hands over)
  kProdQ,     // the producer: Q issued (after waiting for Q's buffer)
  kProdKv,    // the producer: the segment's first K / V issued
  kSegWords = 9
};
constexpr int kMaxSegments = 32;  // launch.h: kStreamKMaxSegments
constexpr int kStride = kHeadWords + kMaxSegments * kSegWords;

/// (Host, QFUSE_VIT_TRACE builds) the device buffer, kBlocks * kStride words, allocated on first
/// use; its words are written to the file at exit.
uint64_t* buffer();

}  // namespace qfuse::vit::trace
