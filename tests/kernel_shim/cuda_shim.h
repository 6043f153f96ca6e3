// A CUDA-to-C++ shim: enough of CUDA for the kernels in kernels/*.cu to
// compile as ordinary C++ with g++ or clang++ and run on the CPU.
//
// The kernels use grid-stride loops,
//     for (i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x)
// so a launch is simulated by calling the kernel once per (block, thread)
// pair, one after another, with blockIdx/threadIdx set for that "thread".
// With grid = block = 1 one call covers every element; with the grid the
// launcher computes (minicnn.cuda.launch_config) every thread takes exactly
// the elements it takes on a GPU. Threads never share an output element (the
// kernels are gathers), so running them one after another gives the GPU's
// result. What this cannot check: CuPy itself (NVRTC, the module load, the
// real launch), shared memory or synchronisation (the kernels use none).
//
// minicnn_shim::launch calls a kernel with the CUDA launch convention,
// args[i] pointing at the value of parameter i, as cuLaunchKernel (and so
// CuPy) passes them; minicnn_shim::signature describes the parameter types
// so the Python loader can check what it passes.
#pragma once
#include <cstddef>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct minicnn_uint3 { unsigned int x, y, z; };
static minicnn_uint3 blockIdx = {0, 0, 0};
static minicnn_uint3 threadIdx = {0, 0, 0};
static minicnn_uint3 blockDim = {1, 1, 1};
static minicnn_uint3 gridDim = {1, 1, 1};

// CUDA's device intrinsics and integer min/max, as the kernels use them.
static inline float __int_as_float(int i) { float f; __builtin_memcpy(&f, &i, sizeof f); return f; }
static inline double __longlong_as_double(long long i) { double d; __builtin_memcpy(&d, &i, sizeof d); return d; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }

namespace minicnn_shim {

// One letter per parameter type: f/d/q/i for float/double/long long/int
// values, upper case (F/D/Q/I) for pointers to them, '?' for anything else.
template <typename T> constexpr char value_code() {
    return std::is_same<T, float>::value ? 'f'
         : std::is_same<T, double>::value ? 'd'
         : std::is_same<T, long long>::value ? 'q'
         : std::is_same<T, int>::value ? 'i' : '?';
}
constexpr char upper(char c) { return c == '?' ? c : (char)(c - 'a' + 'A'); }
template <typename A> constexpr char param_code() {
    return std::is_pointer<A>::value
        ? upper(value_code<typename std::remove_cv<typename std::remove_pointer<A>::type>::type>())
        : value_code<typename std::remove_cv<A>::type>();
}

template <typename... A>
const char* signature(void (*)(A...)) {
    static const char codes[] = {param_code<A>()..., '\0'};
    return codes;
}

template <typename... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<A*>(args[I])...);
}

template <typename... A>
void launch(void (*kernel)(A...), unsigned grid, unsigned block, void** args) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        for (unsigned t = 0; t < block; ++t) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            call(kernel, args, std::index_sequence_for<A...>{});
        }
    }
    blockIdx = threadIdx = {0, 0, 0};
    blockDim = gridDim = {1, 1, 1};
}

}  // namespace minicnn_shim
