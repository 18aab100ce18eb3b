// The pairwise CUDA kernels for pair function soft_zero_one: every weight, float and double
// (one file per pair function, so that nvcc builds the kernel sets in parallel).
#include "pairwise_kernels.cuh"

namespace rankops {
namespace pairwise_cuda {

RANKOPS_PAIRWISE_INSTANCES(, PairFn::SoftZeroOne)

}  // namespace pairwise_cuda
}  // namespace rankops
