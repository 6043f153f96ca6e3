// 2-D max pooling (with stored argmax) and average pooling, forward and backward.
//
// NumPy twins: minicnn.functional.pooling.max_pool2d and avg_pool2d (their
// forward and their autograd backward). The tests compare element by element.
//
// Layout: every buffer is contiguous NCHW, handled as N*C independent planes:
//   x, dx         (N, C, H, W)     plane p = n*C + c starts at p*H*W
//   y, grad_out,
//   indices       (N, C, OH, OW)   plane p starts at p*OH*OW
// Pooling never mixes channels, so NCHW keeps each window inside one plane
// and consecutive threads (consecutive ow or w) touch neighbouring addresses.
//
// Window of output (oh, ow), tap (kh, kw):
//   h = oh*SH - PH + kh*DH,   w = ow*SW - PW + kw*DW
// Taps outside [0, H) x [0, W) are padding: -infinity for max pooling, 0 for
// average pooling.
//
// Argmax convention (PyTorch's): indices[n, c, oh, ow] = h*W + w, the flat
// position of the maximum inside the UNPADDED input plane, int64. Ties go to
// the first maximum in scan order (kh outer, kw inner). A NaN counts as the
// maximum and the LAST NaN in scan order wins (the window outputs NaN), as
// in PyTorch. A window whose real taps are all -inf gets -inf and the index
// of its first real tap; padding taps are skipped, never chosen.
//
// Every kernel uses a grid-stride loop over a long long flat index (safe for
// more than 2^31 elements). Backward kernels are GATHERS, one thread per input
// pixel that visits the output windows covering it: each thread writes only
// its own element, so there are no atomics and the result is deterministic.
// Each kernel is a template over the element type T, written once;
// minicnn/cuda.py instantiates it for float and double by name
// ("max_pool2d_forward<float>", ...) through cupy.RawModule's
// name_expressions, and the CPU tests compile this same file as C++
// (tests/kernel_shim/). No headers, so NVRTC builds the file.


template <typename T> __device__ T negative_infinity();
template <> __device__ float negative_infinity<float>() { return -__int_as_float(0x7f800000); }
template <> __device__ double negative_infinity<double>() { return -__longlong_as_double(0x7ff0000000000000LL); }


// ---------------------------------------------------------------------------
// max_pool2d forward: thread mapping = ONE THREAD PER OUTPUT ELEMENT.
//   flat index i over N*C*OH*OW (NCHW order): ow = i % OW,
//   oh = (i / OW) % OH, plane = i / (OH*OW).
// The thread scans its window, writes the maximum to y[i] and its position
// h*W + w to indices[i]. A window made only of padding (possible only when
// padding exceeds half the dilated kernel) gets -inf and index -1.
// ---------------------------------------------------------------------------
template <typename T>
__global__ void max_pool2d_forward(const T* __restrict__ x, T* __restrict__ y,
                                   long long* __restrict__ indices,
                                   int N, int C, int H, int W,
                                   int KH, int KW, int SH, int SW,
                                   int PH, int PW, int DH, int DW,
                                   int OH, int OW)
{
    const long long total = (long long)N * C * OH * OW;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < total; i += (long long)blockDim.x * gridDim.x) {
        const int ow = (int)(i % OW);
        const int oh = (int)((i / OW) % OH);
        const long long plane = i / ((long long)OH * OW);
        const T* xp = x + plane * H * W;
        T best = negative_infinity<T>();
        long long best_index = -1;
        for (int kh = 0; kh < KH; ++kh) {
            const int h = oh * SH - PH + kh * DH;
            if (h < 0 || h >= H) continue;             // padding row: -inf never wins
            for (int kw = 0; kw < KW; ++kw) {
                const int w = ow * SW - PW + kw * DW;
                if (w < 0 || w >= W) continue;         // padding column
                const T v = xp[(long long)h * W + w];
                // First real tap always taken; then only a strictly larger
                // value (so ties keep the first). Every NaN (v != v) takes
                // over and no number beats a NaN, so the last NaN wins, as in
                // PyTorch and the NumPy twin.
                if (best_index < 0 || v > best || v != v) {
                    best = v;
                    best_index = (long long)h * W + w;
                }
            }
        }
        y[i] = best;
        indices[i] = best_index;
    }
}


// ---------------------------------------------------------------------------
// max_pool2d backward: thread mapping = ONE THREAD PER INPUT ELEMENT.
//   flat index i over N*C*H*W (NCHW order): w = i % W, h = (i / W) % H,
//   plane = i / (H*W).
// dx[i] = sum of grad_out[plane, oh, ow] over every output window that
// covers (h, w) (found from oh*SH = h + PH - kh*DH, exact division, in
// range; likewise ow) and whose stored argmax is this pixel, h*W + w.
// ---------------------------------------------------------------------------
template <typename T>
__global__ void max_pool2d_backward(const T* __restrict__ grad_out,
                                    const long long* __restrict__ indices,
                                    T* __restrict__ dx,
                                    int N, int C, int H, int W,
                                    int KH, int KW, int SH, int SW,
                                    int PH, int PW, int DH, int DW,
                                    int OH, int OW)
{
    const long long total = (long long)N * C * H * W;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < total; i += (long long)blockDim.x * gridDim.x) {
        const int w = (int)(i % W);
        const int h = (int)((i / W) % H);
        const long long plane = i / ((long long)H * W);
        const long long me = (long long)h * W + w;     // this pixel's argmax code
        const long long out_base = plane * OH * OW;
        T sum = T(0);
        for (int kh = 0; kh < KH; ++kh) {
            const int oh_s = h + PH - kh * DH;         // = oh * SH if tap kh covers us
            if (oh_s < 0 || oh_s % SH != 0) continue;
            const int oh = oh_s / SH;
            if (oh >= OH) continue;
            for (int kw = 0; kw < KW; ++kw) {
                const int ow_s = w + PW - kw * DW;
                if (ow_s < 0 || ow_s % SW != 0) continue;
                const int ow = ow_s / SW;
                if (ow >= OW) continue;
                const long long o = out_base + (long long)oh * OW + ow;
                if (indices[o] == me) sum += grad_out[o];
            }
        }
        dx[i] = sum;
    }
}


// Number of taps of window (oh, ow) that lie inside the unpadded input: the
// divisor of average pooling when count_include_pad is false. Rows and
// columns are independent, so it is (valid rows) * (valid columns).
__device__ int avg_pool_real_taps(int oh, int ow, int H, int W,
                                  int KH, int KW, int SH, int SW, int PH, int PW)
{
    const int h0 = oh * SH - PH, w0 = ow * SW - PW;
    const int rows = min(h0 + KH, H) - max(h0, 0);
    const int cols = min(w0 + KW, W) - max(w0, 0);
    return (rows > 0 && cols > 0) ? rows * cols : 0;
}


// ---------------------------------------------------------------------------
// avg_pool2d forward: thread mapping = ONE THREAD PER OUTPUT ELEMENT
// (same decomposition as max_pool2d forward).
//   y = (sum of the real taps of the window) / divisor,
//   divisor = KH*KW if count_include_pad else the number of real taps.
// A window with no real tap and count_include_pad false gives 0.
// ---------------------------------------------------------------------------
template <typename T>
__global__ void avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y,
                                   int N, int C, int H, int W,
                                   int KH, int KW, int SH, int SW,
                                   int PH, int PW, int count_include_pad,
                                   int OH, int OW)
{
    const long long total = (long long)N * C * OH * OW;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < total; i += (long long)blockDim.x * gridDim.x) {
        const int ow = (int)(i % OW);
        const int oh = (int)((i / OW) % OH);
        const long long plane = i / ((long long)OH * OW);
        const T* xp = x + plane * H * W;
        T sum = T(0);
        for (int kh = 0; kh < KH; ++kh) {
            const int h = oh * SH - PH + kh;
            if (h < 0 || h >= H) continue;             // padding counts as 0
            for (int kw = 0; kw < KW; ++kw) {
                const int w = ow * SW - PW + kw;
                if (w < 0 || w >= W) continue;
                sum += xp[(long long)h * W + w];
            }
        }
        const int divisor = count_include_pad
            ? KH * KW : avg_pool_real_taps(oh, ow, H, W, KH, KW, SH, SW, PH, PW);
        y[i] = divisor > 0 ? sum / T(divisor) : T(0);
    }
}


// ---------------------------------------------------------------------------
// avg_pool2d backward: thread mapping = ONE THREAD PER INPUT ELEMENT
// (same decomposition as max_pool2d backward).
//   dx[n, c, h, w] = sum over the windows (oh, ow) covering (h, w) of
//                    grad_out[n, c, oh, ow] / divisor(oh, ow).
// ---------------------------------------------------------------------------
template <typename T>
__global__ void avg_pool2d_backward(const T* __restrict__ grad_out, T* __restrict__ dx,
                                    int N, int C, int H, int W,
                                    int KH, int KW, int SH, int SW,
                                    int PH, int PW, int count_include_pad,
                                    int OH, int OW)
{
    const long long total = (long long)N * C * H * W;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < total; i += (long long)blockDim.x * gridDim.x) {
        const int w = (int)(i % W);
        const int h = (int)((i / W) % H);
        const long long plane = i / ((long long)H * W);
        const long long out_base = plane * OH * OW;
        T sum = T(0);
        for (int kh = 0; kh < KH; ++kh) {
            const int oh_s = h + PH - kh;              // = oh * SH if tap kh covers us
            if (oh_s < 0 || oh_s % SH != 0) continue;
            const int oh = oh_s / SH;
            if (oh >= OH) continue;
            for (int kw = 0; kw < KW; ++kw) {
                const int ow_s = w + PW - kw;
                if (ow_s < 0 || ow_s % SW != 0) continue;
                const int ow = ow_s / SW;
                if (ow >= OW) continue;
                // A covering window always has this real pixel among its taps,
                // so its divisor is at least 1.
                const int divisor = count_include_pad
                    ? KH * KW : avg_pool_real_taps(oh, ow, H, W, KH, KW, SH, SW, PH, PW);
                sum += grad_out[out_base + (long long)oh * OW + ow] / T(divisor);
            }
        }
        dx[i] = sum;
    }
}

