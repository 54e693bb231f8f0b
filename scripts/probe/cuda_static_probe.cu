// A CUDA library of one kernel, built with the static and with the shared runtime by
// scripts/probe_import.sh (bench/NOTES.md P1).
__global__ void probe_kernel(float* x) {
  x[threadIdx.x] += 1.0f;
}
extern "C" int probe_launch(float* x) {
  probe_kernel<<<1, 32>>>(x);
  return 0;
}
