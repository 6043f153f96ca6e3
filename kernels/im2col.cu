// im2col / col2im: the data movement around the convolution GEMM.
//
// NumPy twins: minicnn.functional.conv.im2col and col2im. The tests compare
// these kernels with them element by element.
//
// Layouts (all buffers contiguous, row-major):
//   x, dx  (N, H, W, C)   channels-last ("NHWC"); the Python wrapper passes
//                          x.transpose(0, 2, 3, 1) made contiguous, and
//                          returns dx transposed back to the (N, C, H, W) view.
//   cols   (N*OH*OW, KH*KW*C)
//          row    = (n*OH + oh)*OW + ow          one output pixel
//          column = (kh*KW + kw)*C + c           one (kernel tap, channel)
//
// The input pixel a cols entry reads (or 0 when it lies in the padding):
//   h = oh*SH - PH + kh*DH,   w = ow*SW - PW + kw*DW
//
// Why channels-last: the fastest index of cols is c, and the fastest index of
// x is also c, so consecutive threads read and write consecutive addresses.
//
// Every kernel uses a grid-stride loop over a flat index of type long long,
// so any grid size works and tensors with more than 2^31 elements are safe.
// Each kernel is a template over the element type T, written once;
// minicnn/cuda.py instantiates it for float and double by name
// ("im2col<float>", "im2col<double>") through cupy.RawModule's
// name_expressions, and the CPU tests compile this same file as C++
// (tests/kernel_shim/) and instantiate it the same way.
//
// The file includes no headers, so NVRTC (CuPy's default compiler) builds it.


// ---------------------------------------------------------------------------
// im2col: thread mapping = ONE THREAD PER ELEMENT OF cols.
//   flat index i over N*OH*OW*KH*KW*C, decomposed as
//   i = row * (KH*KW*C) + column,  column = (kh*KW + kw)*C + c,
//   row = (n*OH + oh)*OW + ow.
// The thread reads one input value (or 0 in the padding) and writes cols[i].
// ---------------------------------------------------------------------------
template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ cols,
                       int N, int H, int W, int C,
                       int KH, int KW, int SH, int SW,
                       int PH, int PW, int DH, int DW,
                       int OH, int OW)
{
    const long long ncols = (long long)KH * KW * C;
    const long long total = (long long)N * OH * OW * ncols;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < total; i += (long long)blockDim.x * gridDim.x) {
        // Split the column index into (kh, kw, c).
        const long long column = i % ncols;
        const int c  = (int)(column % C);
        const int kw = (int)((column / C) % KW);
        const int kh = (int)(column / ((long long)C * KW));
        // Split the row index into (n, oh, ow).
        const long long row = i / ncols;
        const int ow = (int)(row % OW);
        const int oh = (int)((row / OW) % OH);
        const int n  = (int)(row / ((long long)OW * OH));
        // The input pixel this tap of this output position looks at.
        const int h = oh * SH - PH + kh * DH;
        const int w = ow * SW - PW + kw * DW;
        T value = T(0);
        if (h >= 0 && h < H && w >= 0 && w < W) {
            value = x[(((long long)n * H + h) * W + w) * C + c];
        }
        cols[i] = value;
    }
}


// ---------------------------------------------------------------------------
// col2im: thread mapping = ONE THREAD PER INPUT PIXEL (n, h, w, c) of dx.
//   flat index i over N*H*W*C in NHWC order (c fastest).
// It is a GATHER: the thread visits every kernel tap (kh, kw) that could have
// read this pixel, works out which output position (oh, ow) that would be,
//   oh*SH = h + PH - kh*DH   (must divide exactly and lie in [0, OH))
//   ow*SW = w + PW - kw*DW   (likewise in [0, OW)),
// and adds cols[(n*OH + oh)*OW + ow, (kh*KW + kw)*C + c]. Each thread writes
// only its own dx element, so no atomics are needed and the result is
// deterministic. The taps are summed in the order kh outer, kw inner.
// ---------------------------------------------------------------------------
template <typename T>
__global__ void col2im(const T* __restrict__ cols, T* __restrict__ dx,
                       int N, int H, int W, int C,
                       int KH, int KW, int SH, int SW,
                       int PH, int PW, int DH, int DW,
                       int OH, int OW)
{
    const long long ncols = (long long)KH * KW * C;
    const long long total = (long long)N * H * W * C;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < total; i += (long long)blockDim.x * gridDim.x) {
        const int c = (int)(i % C);
        const int w = (int)((i / C) % W);
        const int h = (int)((i / ((long long)C * W)) % H);
        const int n = (int)(i / ((long long)C * W * H));
        T sum = T(0);
        for (int kh = 0; kh < KH; ++kh) {
            const int oh_s = h + PH - kh * DH;          // = oh * SH if tap kh read us
            if (oh_s < 0 || oh_s % SH != 0) continue;
            const int oh = oh_s / SH;
            if (oh >= OH) continue;
            for (int kw = 0; kw < KW; ++kw) {
                const int ow_s = w + PW - kw * DW;      // = ow * SW if tap kw read us
                if (ow_s < 0 || ow_s % SW != 0) continue;
                const int ow = ow_s / SW;
                if (ow >= OW) continue;
                const long long row = ((long long)n * OH + oh) * OW + ow;
                sum += cols[row * ncols + ((long long)kh * KW + kw) * C + c];
            }
        }
        dx[i] = sum;
    }
}

