// Vulkan backend: device tensors are tb::Tensors over External storage that keeps a Buffer alive
// (see Note [device tensors] in compute/backend.h). Ops record dispatches into one CommandStream;
// nothing is submitted until download() or synchronize(), so a network runs without host round trips.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

#include "compute/backend.h"
#include "compute/shape_infer.h"
#include "compute/vulkan/buffer.h"
#include "compute/vulkan/command_stream.h"
#include "compute/vulkan/context.h"
#include "compute/vulkan/pipeline.h"
#include "compute/vulkan/shaders.h"
#include "compute/vulkan/vk_check.h"
#include "tensor/checked.h"

namespace tb::compute::vulkan {
namespace {

using detail::check_dtype;

/** Storage -> Buffer of the live device tensors of one backend, plus freed buffers kept for reuse
 *  (vkAllocateMemory per op is slow on real drivers and their allocation count is limited). */
struct Registry {
  std::mutex mu;
  std::unordered_map<const Storage*, std::shared_ptr<Buffer>> buffers;
  std::multimap<size_t, std::shared_ptr<Buffer>> free;
  size_t free_bytes = 0;
  bool backend_alive = true;  // tensors outliving their backend release their buffers directly
  static constexpr size_t kMaxFreeBytes = size_t(512) << 20;

  /** A recycled buffer of exactly this size that no recorded command still uses, or null. */
  std::shared_ptr<Buffer> take(size_t size) {
    std::lock_guard<std::mutex> lock(mu);
    auto range = free.equal_range(size);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second.use_count() == 1) {  // not referenced by a pending CommandStream
        auto b = std::move(it->second);
        free.erase(it);
        free_bytes -= size;
        return b;
      }
    }
    return nullptr;
  }
};

/** keepalive of a device tensor's Storage: when the storage dies, unregisters it and parks its
 *  buffer for reuse. */
struct Holder {
  std::shared_ptr<Registry> registry;
  const Storage* key = nullptr;
  ~Holder() {
    std::lock_guard<std::mutex> lock(registry->mu);
    auto it = registry->buffers.find(key);
    if (it == registry->buffers.end()) return;
    size_t size = it->second->size();
    if (registry->backend_alive && registry->free_bytes + size <= Registry::kMaxFreeBytes) {
      registry->free.emplace(size, std::move(it->second));
      registry->free_bytes += size;
    }
    registry->buffers.erase(it);
  }
};

/** Grid for n threads in workgroups of `local` (x capped at 65535, the rest in y). */
std::array<uint32_t, 2> grid1d(uint64_t n, uint32_t local) {
  uint64_t groups = std::max<uint64_t>(1, (n + local - 1) / local);
  uint64_t gx = std::min<uint64_t>(groups, 65535);
  uint64_t gy = (groups + gx - 1) / gx;
  TB_CHECK(gy <= 65535, UnsupportedError, "[vulkan] ", n, " elements exceed one dispatch");
  return {uint32_t(gx), uint32_t(gy)};
}

uint32_t u32(int64_t v, const char* what) {
  TB_CHECK(v >= 0 && v <= int64_t(UINT32_MAX), UnsupportedError, "[vulkan] ", what, " ", v,
           " does not fit the shaders' 32-bit indices");
  return uint32_t(v);
}

/** A shader's push constants: the values as 32-bit words (each already range-checked, by u32 or by the
 *  geometry). */
template <size_t N>
std::array<uint32_t, N> words(const int64_t (&v)[N]) {
  std::array<uint32_t, N> out;
  for (size_t i = 0; i < N; ++i) out[i] = uint32_t(v[i]);
  return out;
}

class VulkanBackend final : public Backend {
 public:
  explicit VulkanBackend(std::shared_ptr<Context> ctx)
      : ctx_(std::move(ctx)), stream_(ctx_), registry_(std::make_shared<Registry>()) {
    // Note [gemm shader choice]: shared-memory tiling (gemm.comp) suits GPUs; on CPU devices
    // (lavapipe) barriers are costly and the direct variant is faster (bench/bench_compute).
    // TB_VK_GEMM=tiled|direct overrides.
    // f16 x f16 products (GEMMs, conv2d's implicit GEMM) take the cooperative-matrix shaders when
    // the device has them (Note
    // [cooperative matrices] in context.cpp); TB_VK_GEMM=coopmat insists on it, coopmat-emulated
    // runs its plain-arithmetic double (tests on lavapipe), tiled|direct keep f16 on the plain path.
    const char* env = std::getenv("TB_VK_GEMM");
    std::string mode = env ? env : "";
    bool cpu_device = ctx_->properties().deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    gemm_forced_ = env != nullptr;
    gemm_shader_ = mode == "direct" || (!env && cpu_device) ? "gemm_direct" : "gemm";
    if (mode == "coopmat") {
      TB_CHECK(ctx_->coopmat_f16(), UnsupportedError, "[vulkan] TB_VK_GEMM=coopmat: ", ctx_->device_name(),
               " has no 16x16x16 f16 -> f32 cooperative matrices (VK_NV_cooperative_matrix)");
      coopmat_ = Coopmat::Real;
    } else if (mode == "coopmat-emulated") {
      coopmat_ = Coopmat::Emulated;
    } else if (!env && ctx_->coopmat_f16()) {
      coopmat_ = Coopmat::Real;
    }
    if (const char* tile = std::getenv("TB_VK_COOPMAT_TILE")) coopmat_tile_ = parse_coopmat_tile(tile);
  }
  ~VulkanBackend() override {
    try {
      stream_.submit_and_wait();
    } catch (const Error&) {}
    std::lock_guard<std::mutex> lock(registry_->mu);
    registry_->free.clear();
    registry_->free_bytes = 0;
    registry_->backend_alive = false;
  }

  std::string name() const override { return "vulkan:" + std::to_string(index_) + " (" + ctx_->device_name() + ")"; }
  bool supports(Op op, DType dtype) const override { return detail::supports_dtype(op, dtype); }
  void set_index(int i) { index_ = i; }

  bool owns(const Tensor& t) const override { return t.defined() && lookup(t) != nullptr; }

  Tensor upload(const Tensor& host) override {
    TB_CHECK(host.defined(), ShapeError, "[vulkan] upload of an undefined tensor");
    if (owns(host)) return host;
    TB_CHECK(host.storage()->data() != nullptr, BackendError,
             "[vulkan] upload: the tensor lives on another device; download() it from its backend first");
    Tensor src = host.contiguous();
    auto [t, buf] = alloc(src.dtype(), src.shape());
    if (src.nbytes() == 0) return t;
    if (buf->mapped()) {
      std::memcpy(buf->mapped(), src.data(), src.nbytes());
    } else {
      auto staging = Buffer::create(ctx_, src.nbytes(), Buffer::Use::Staging);
      std::memcpy(staging->mapped(), src.data(), src.nbytes());
      stream_.copy(staging, buf, src.nbytes());
    }
    return t;
  }

  Tensor download(const Tensor& t) override {
    TB_CHECK(t.defined(), ShapeError, "[vulkan] download of an undefined tensor");
    auto buf = lookup(t);
    if (!buf) return t.contiguous();
    stream_.submit_and_wait();
    size_t n = t.storage()->nbytes();
    auto host = Storage::allocate(n, false);
    if (n) {
      if (buf->mapped()) {
        std::memcpy(host->data(), buf->mapped(), n);
      } else {
        auto staging = Buffer::create(ctx_, n, Buffer::Use::Staging);
        stream_.copy(buf, staging, n);
        stream_.submit_and_wait();
        std::memcpy(host->data(), staging->mapped(), n);
      }
    }
    return Tensor(host, t.dtype(), t.shape(), t.strides(), t.byte_offset()).contiguous();
  }

  void synchronize() override { stream_.submit_and_wait(); }

  Tensor gemm(const Tensor& a, const Tensor& b, const Tensor* c, const GemmParams& p) override {
    check_dtype(*this, Op::Gemm, a);
    check_dtype(*this, Op::Gemm, b);
    auto g = detail::gemm_geom(a, b, c, p);
    bool coop = use_coopmat(a, b, g.n, g.k);
    Tensor A = operand(a, coop), B = operand(b, coop), C = c ? input(*c) : Tensor();
    auto [Y, ybuf] = alloc(DType::F32, {g.m, g.n});
    if (Y.numel() == 0) return finish(Y, a.dtype());
    GemmPush pc{};
    pc.M = u32(g.m, "M"), pc.N = u32(g.n, "N"), pc.K = u32(g.k, "K");
    pc.a_si = p.trans_a ? 1 : pc.K, pc.a_sk = p.trans_a ? pc.M : 1;
    pc.b_sk = p.trans_b ? 1 : pc.N, pc.b_sn = p.trans_b ? pc.K : 1;
    pc.alpha = p.alpha, pc.beta = p.beta, pc.relu = p.relu ? 1 : 0;
    if (c && c->numel() > 0 && p.beta != 0.0f) {  // beta 0 ignores C entirely (NaN/Inf in C included)
      Shape st = detail::broadcast_strides(C.shape(), {g.m, g.n});
      pc.c_si = uint32_t(st[0]), pc.c_sn = uint32_t(st[1]), pc.has_c = 1;
    }
    run_gemm(pc, A, B, c ? C : A, ybuf, 1);
    return finish(Y, a.dtype());
  }

  Tensor matmul(const Tensor& a, const Tensor& b) override {
    check_dtype(*this, Op::MatMul, a);
    check_dtype(*this, Op::MatMul, b);
    auto g = detail::matmul_geom(a, b);
    bool coop = use_coopmat(a, b, g.n, g.k);
    Tensor A = operand(a, coop), B = operand(b, coop);
    auto [Y, ybuf] = alloc(DType::F32, g.out_shape);
    if (Y.numel() == 0) return finish(Y, a.dtype());
    GemmPush pc{};
    pc.M = u32(g.m, "M"), pc.N = u32(g.n, "N"), pc.K = u32(g.k, "K");
    pc.a_si = pc.K, pc.a_sk = 1, pc.b_sk = pc.N, pc.b_sn = 1, pc.alpha = 1.0f;
    u32(Y.numel(), "output size");
    // One dispatch when each operand's batch index is either i or 0 (the usual cases).
    auto affine = [&](const std::vector<int64_t>& idx, int64_t& stride) {
      stride = g.batch > 1 ? idx[1] - idx[0] : 0;
      if (stride != 0 && stride != 1) return false;
      for (int64_t i = 0; i < g.batch; ++i)
        if (idx[size_t(i)] != i * stride) return false;
      return true;
    };
    int64_t sa = 0, sb = 0;
    if (g.batch <= 65535 && affine(g.a_batch_index, sa) && affine(g.b_batch_index, sb)) {
      pc.a_bs = uint32_t(sa * g.m * g.k), pc.b_bs = uint32_t(sb * g.k * g.n), pc.y_bs = uint32_t(g.m * g.n);
      run_gemm(pc, A, B, A, ybuf, uint32_t(g.batch));
    } else {
      for (int64_t i = 0; i < g.batch; ++i) {
        pc.a_off = uint32_t(g.a_batch_index[size_t(i)] * g.m * g.k);
        pc.b_off = uint32_t(g.b_batch_index[size_t(i)] * g.k * g.n);
        pc.y_off = uint32_t(i * g.m * g.n);
        run_gemm(pc, A, B, A, ybuf, 1);
      }
    }
    return finish(Y, a.dtype());
  }

  Tensor add(const Tensor& a, const Tensor& b) override { return binary(Op::Add, a, b); }
  Tensor mul(const Tensor& a, const Tensor& b) override { return binary(Op::Mul, a, b); }

  Tensor relu(const Tensor& x) override {
    check_dtype(*this, Op::Relu, x);
    Tensor X = input(x);
    auto [Y, ybuf] = alloc(DType::F32, X.shape());
    if (Y.numel() == 0) return finish(Y, x.dtype());
    struct {
      uint32_t n;
    } pc{u32(X.numel(), "size")};
    auto gr = grid1d(pc.n, 256);
    stream_.dispatch(pipeline("relu"), {buffer(X), ybuf}, &pc, sizeof pc, gr[0], gr[1]);
    return finish(Y, x.dtype());
  }

  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dParams& p) override {
    check_dtype(*this, Op::Conv2d, x);
    check_dtype(*this, Op::Conv2d, w);
    auto g = detail::conv2d_geom(x, w, bias, p);
    const char* env = std::getenv("TB_VK_CONV");
    uint32_t og = uint32_t(g.o / g.groups), gn = uint32_t(g.n * g.oh * g.ow);
    bool igemm = env ? std::string(env) == "igemm" : og >= 8;
    bool coop = igemm && x.dtype() == DType::F16 && w.dtype() == DType::F16 && coopmat_checked();
    Tensor X = operand(x, coop), W = operand(w, coop), Bv = bias ? input(*bias) : Tensor();
    auto [Y, ybuf] = alloc(DType::F32, {g.n, g.o, g.oh, g.ow});
    if (Y.numel() == 0) return finish(Y, x.dtype());
    u32(X.numel(), "input size");
    u32(W.numel(), "weight size");
    const auto pc =
        words({u32(Y.numel(), "output size"), g.n, g.c, g.h, g.w, g.o, g.kh, g.kw, g.oh, g.ow, p.stride[0], p.stride[1],
               p.padding[0], p.padding[1], p.dilation[0], p.dilation[1], g.groups, bias ? 1 : 0});
    // Note [conv2d shader choice]: the implicit GEMM (conv2d_igemm.comp) tiles output channels per
    // group x output pixels; with fewer than 8 channels per group (depthwise) its rows would idle, so
    // the direct one-output-per-thread shader runs. TB_VK_CONV=igemm|direct overrides. f16 input
    // and weights take the cooperative-matrix variant of the implicit GEMM where it is on.
    if (igemm) {
      std::vector<uint32_t> t = coop ? coopmat_tile(og, gn) : gemm_tile(og, gn);
      uint32_t bm = coop ? t[2] * t[4] * 16 : t[1] * t[2], bn = coop ? t[3] * t[5] * 16 : t[0] * t[3];
      uint32_t gx = (gn + bn - 1) / bn, gy = (og + bm - 1) / bm;
      TB_CHECK(gx <= 65535 && gy <= 65535 && g.groups <= 65535, UnsupportedError, "[vulkan] conv2d output of ", g.o,
               "x", gn, " in ", g.groups, " groups is too large");
      stream_.dispatch(pipeline(coop ? coopmat_shader("conv2d") : "conv2d_igemm", t),
                       {buffer(X), buffer(W), bias ? buffer(Bv) : buffer(W), ybuf}, pc.data(), sizeof pc, gx, gy,
                       uint32_t(g.groups));
      return finish(Y, x.dtype());
    }
    auto gr = grid1d(pc[0], 256);
    stream_.dispatch(pipeline("conv2d"), {buffer(X), buffer(W), bias ? buffer(Bv) : buffer(W), ybuf}, pc.data(),
                     sizeof pc, gr[0], gr[1]);
    return finish(Y, x.dtype());
  }

  Tensor max_pool2d(const Tensor& x, const Pool2dParams& p) override {
    check_dtype(*this, Op::MaxPool2d, x);
    if (detail::is_pooled_integer(x.dtype())) {  // rare: pool the widened values, narrow on the host
      Tensor y = download(max_pool2d(upload(download(x).to(DType::F32)), p));
      return upload(detail::narrow_pooled(y, x.dtype()));
    }
    auto g = detail::pool2d_geom(x, p);
    Tensor X = input(x);
    Shape out_shape = x.dim() == 4 ? Shape{g.n, g.c, g.oh, g.ow} : Shape{g.c, g.oh, g.ow};
    auto [Y, ybuf] = alloc(DType::F32, out_shape);
    if (Y.numel() == 0) return finish(Y, x.dtype());
    u32(X.numel(), "input size");
    const auto pc = words({u32(Y.numel(), "output size"), g.h, g.w, g.oh, g.ow, g.kernel[0], g.kernel[1], g.stride[0],
                           g.stride[1], g.padding[0], g.padding[1], g.dilation[0], g.dilation[1]});
    auto gr = grid1d(pc[0], 256);
    stream_.dispatch(pipeline("maxpool2d"), {buffer(X), ybuf}, pc.data(), sizeof pc, gr[0], gr[1]);
    return finish(Y, x.dtype());
  }

  Tensor batch_norm(const Tensor& x, const Tensor& mean, const Tensor& var, const Tensor* weight, const Tensor* bias,
                    double eps) override {
    check_dtype(*this, Op::BatchNorm, x);
    int64_t c = detail::batch_norm_channels(x, mean, var, weight, bias);
    Tensor X = input(x), M = input(mean), V = input(var);
    Tensor G = weight ? input(*weight) : M, B = bias ? input(*bias) : M;
    auto [Y, ybuf] = alloc(DType::F32, X.shape());
    if (Y.numel() == 0) return finish(Y, x.dtype());
    int64_t inner = 1;
    for (int64_t d = 2; d < X.dim(); ++d) inner *= X.shape()[size_t(d)];
    struct {
      uint32_t total, C, inner, has_w, has_b;
      float eps;
    } pc{u32(X.numel(), "size"), uint32_t(c), uint32_t(inner), weight ? 1u : 0u, bias ? 1u : 0u, float(eps)};
    auto gr = grid1d(pc.total, 256);
    stream_.dispatch(pipeline("batchnorm"), {buffer(X), buffer(M), buffer(V), buffer(G), buffer(B), ybuf}, &pc,
                     sizeof pc, gr[0], gr[1]);
    return finish(Y, x.dtype());
  }

  Tensor softmax(const Tensor& x, int64_t axis) override {
    check_dtype(*this, Op::Softmax, x);
    int64_t ax = detail::normalize_axis(axis, x.dim(), "softmax");
    Tensor X = input(x);
    auto [Y, ybuf] = alloc(DType::F32, X.shape());
    if (Y.numel() == 0) return finish(Y, x.dtype());
    int64_t outer = 1, len = x.dim() ? X.shape()[size_t(ax)] : 1, inner = 1;
    for (int64_t d = 0; d < ax; ++d) outer *= X.shape()[size_t(d)];
    for (int64_t d = ax + 1; d < X.dim(); ++d) inner *= X.shape()[size_t(d)];
    u32(X.numel(), "size");
    uint32_t pc[3] = {uint32_t(outer * inner), uint32_t(len), uint32_t(inner)};
    auto gr = grid1d(pc[0], 64);
    stream_.dispatch(pipeline("softmax"), {buffer(X), ybuf}, pc, sizeof pc, gr[0], gr[1]);
    return finish(Y, x.dtype());
  }

  Tensor cast(const Tensor& x, DType to) override {
    check_dtype(*this, Op::Cast, x);
    TB_CHECK(detail::supports_dtype(Op::Cast, to), UnsupportedError, "[vulkan] cast: target ", dtype_name(to),
             " is not one of float32, float16, bfloat16");
    Tensor X = device(x);
    if (X.dtype() == to) return X;
    if (X.dtype() != DType::F32 && to != DType::F32) return cast(cast(X, DType::F32), to);
    auto [Y, ybuf] = alloc(to, X.shape());
    if (Y.numel() == 0) return Y;
    uint32_t mode = to == DType::F16 ? 0 : to == DType::BF16 ? 1 : X.dtype() == DType::F16 ? 2 : 3;
    uint32_t pc[2] = {u32(X.numel(), "size"), mode};
    auto gr = grid1d(mode <= 1 ? (uint64_t(pc[0]) + 1) / 2 : pc[0], 256);
    stream_.dispatch(pipeline("cast"), {buffer(X), ybuf}, pc, sizeof pc, gr[0], gr[1]);
    return Y;
  }

 private:
  struct GemmPush {
    uint32_t M, N, K, a_off, b_off, y_off, a_bs, b_bs, y_bs, a_si, a_sk, b_sk, b_sn, c_si, c_sn, has_c;
    float alpha, beta;
    uint32_t relu;
  };

  void run_gemm(const GemmPush& pc, const Tensor& A, const Tensor& B, const Tensor& C, const std::shared_ptr<Buffer>& y,
                uint32_t batch) {
    u32(A.numel(), "A size");
    u32(B.numel(), "B size");
    if (A.dtype() == DType::F16) {  // operand() left f16 only for the cooperative-matrix shader
      std::vector<uint32_t> t = coopmat_tile(pc.M, pc.N);
      uint32_t bm = t[2] * t[4] * 16, bn = t[3] * t[5] * 16;
      uint32_t gx = (pc.N + bn - 1) / bn, gy = (pc.M + bm - 1) / bm;
      TB_CHECK(gx <= 65535 && gy <= 65535, UnsupportedError, "[vulkan] gemm of ", pc.M, "x", pc.N, " is too large");
      stream_.dispatch(pipeline(coopmat_shader("gemm"), t), {buffer(A), buffer(B), buffer(C), y}, &pc, sizeof pc, gx,
                       gy, batch);
      return;
    }
    // Note [skinny gemm]: for N <= 16 and K <= 64 (e.g. the seed MLP's K=20, N=10 over large M)
    // the 64x64 tiles waste most of their threads; gemm_skinny runs one thread per output row.
    // TB_VK_GEMM (see the constructor) forces one shader for every shape.
    if (!gemm_forced_ && pc.N <= 16 && pc.K <= 64 && (pc.M + 63) / 64 <= 65535) {
      stream_.dispatch(pipeline("gemm_skinny"), {buffer(A), buffer(B), buffer(C), y}, &pc, sizeof pc, (pc.M + 63) / 64,
                       1, batch);
      return;
    }
    if (gemm_shader_ == "gemm") {
      std::vector<uint32_t> t = gemm_tile(pc.M, pc.N);
      uint32_t bm = t[1] * t[2], bn = t[0] * t[3];
      uint32_t gx = (pc.N + bn - 1) / bn, gy = (pc.M + bm - 1) / bm;
      TB_CHECK(gx <= 65535 && gy <= 65535, UnsupportedError, "[vulkan] gemm of ", pc.M, "x", pc.N, " is too large");
      stream_.dispatch(pipeline("gemm", t), {buffer(A), buffer(B), buffer(C), y}, &pc, sizeof pc, gx, gy, batch);
      return;
    }
    uint32_t gx = (pc.N + 63) / 64, gy = (pc.M + 63) / 64;
    TB_CHECK(gx <= 65535 && gy <= 65535, UnsupportedError, "[vulkan] gemm of ", pc.M, "x", pc.N, " is too large");
    stream_.dispatch(pipeline(gemm_shader_), {buffer(A), buffer(B), buffer(C), y}, &pc, sizeof pc, gx, gy, batch);
  }

  Tensor binary(Op op, const Tensor& a, const Tensor& b) {
    check_dtype(*this, op, a);
    check_dtype(*this, op, b);
    Shape out = detail::broadcast_shapes(a.shape(), b.shape(), op_name(op));
    TB_CHECK(out.size() <= 6, UnsupportedError, "[vulkan] ", op_name(op), " supports up to 6 dims, got ",
             shape_str(out));
    Tensor A = input(a), B = input(b);
    auto [Y, ybuf] = alloc(DType::F32, out);
    if (Y.numel() == 0) return finish(Y, a.dtype());
    Shape sa = detail::broadcast_strides(A.shape(), out), sb = detail::broadcast_strides(B.shape(), out);
    struct {
      uint32_t n, op, pad0, pad1;
      uint32_t shape[6], sa[6], sb[6];
    } pc{};
    pc.n = u32(Y.numel(), "size");
    pc.op = op == Op::Add ? 0 : 1;
    size_t off = 6 - out.size();
    for (size_t d = 0; d < 6; ++d) {
      pc.shape[d] = d < off ? 1 : uint32_t(out[d - off]);
      pc.sa[d] = d < off ? 0 : uint32_t(sa[d - off]);
      pc.sb[d] = d < off ? 0 : uint32_t(sb[d - off]);
    }
    auto gr = grid1d(pc.n, 256);
    stream_.dispatch(pipeline("binary"), {buffer(A), buffer(B), ybuf}, &pc, sizeof pc, gr[0], gr[1]);
    return finish(Y, a.dtype());
  }

  /** A new contiguous device tensor and its buffer. */
  std::pair<Tensor, std::shared_ptr<Buffer>> alloc(DType dtype, const Shape& shape) {
    size_t nbytes = checked_nbytes(checked_numel(shape), dtype_size(dtype), "a Vulkan buffer");
    auto buf = registry_->take(std::max<size_t>(4, (nbytes + 3) / 4 * 4));
    if (!buf) buf = Buffer::create(ctx_, nbytes, Buffer::Use::Device);
    auto holder = std::make_shared<Holder>();
    holder->registry = registry_;
    auto storage = Storage::wrap(nullptr, nbytes, holder, Storage::Kind::External);
    holder->key = storage.get();
    {
      std::lock_guard<std::mutex> lock(registry_->mu);
      registry_->buffers[storage.get()] = buf;
    }
    return {Tensor(storage, dtype, shape, contiguous_strides(shape)), buf};
  }

  std::shared_ptr<Buffer> lookup(const Tensor& t) const {
    std::lock_guard<std::mutex> lock(registry_->mu);
    auto it = registry_->buffers.find(t.storage().get());
    return it == registry_->buffers.end() ? nullptr : it->second;
  }

  /** Buffer of a contiguous device tensor at byte offset 0 (what device() returns). */
  std::shared_ptr<Buffer> buffer(const Tensor& t) const {
    auto b = lookup(t);
    TB_ASSERT(b && t.is_contiguous() && t.byte_offset() == 0, "not a packed device tensor");
    return b;
  }

  /** t as a packed tensor on this device (uploads host tensors; repacks views). */
  Tensor device(const Tensor& t) {
    Tensor d = upload(t);
    if (!d.is_contiguous() || d.byte_offset() != 0) d = upload(download(d));
    return d;
  }
  /** t as a packed f32 tensor on this device (f16/bf16 widened on the device). */
  Tensor input(const Tensor& t) {
    Tensor d = device(t);
    return d.dtype() == DType::F32 ? d : cast(d, DType::F32);
  }
  /** The cooperative-matrix shader for `op` ("gemm" or "conv2d"), real or emulated. */
  std::string coopmat_shader(const char* op) const {
    return std::string(op) + (coopmat_ == Coopmat::Real ? "_coopmat" : "_coopmat_emu");
  }
  /** Whether a GEMM of these operands (N columns, K deep) runs on the cooperative-matrix shader:
   *  both f16, the shader enabled, and not a skinny product gemm_skinny serves better. */
  bool use_coopmat(const Tensor& a, const Tensor& b, int64_t n, int64_t k) {
    return a.dtype() == DType::F16 && b.dtype() == DType::F16 && (gemm_forced_ || !(n <= 16 && k <= 64)) &&
           coopmat_checked();
  }

  // Note [cooperative-matrix self-check]: the tensor-core shaders are chosen by what the driver
  // reports and can only be tested where a GPU has them, so before the first f16 product uses them
  // one small GEMM (uneven edges, a transpose, C, ReLU) is compared with the CPU backend. On a
  // mismatch the default falls back to the plain shaders with a warning on stderr; TB_VK_GEMM=coopmat
  // throws instead. The emulated shaders take the same check, so lavapipe runs it.
  bool coopmat_checked() {
    if (coopmat_ == Coopmat::Off) return false;
    if (coopmat_check_ != Check::Pending) return true;  // passed, or running (the check's own GEMM)
    coopmat_check_ = Check::Running;
    Tensor a = Tensor::randn({40, 37}, 11).to(DType::F16), b = Tensor::randn({70, 37}, 12).to(DType::F16);
    Tensor c = Tensor::randn({70}, 13).to(DType::F16);
    GemmParams p{false, true, 0.5f, 2.0f, /*relu=*/true};
    uint64_t before = dispatches_of(coopmat_shader("gemm"));
    Tensor got = download(gemm(a, b, &c, p)).to(DType::F32);
    Tensor want = cpu::make_backend(1)->gemm(a, b, &c, p).to(DType::F32);
    TB_ASSERT(dispatches_of(coopmat_shader("gemm")) == before + 1, "self-check bypassed the shader");
    coopmat_check_ = Check::Passed;
    if (allclose(got, want, 1e-3, 1e-3)) return true;
    coopmat_ = Coopmat::Off;
    std::string what = str("[vulkan] the cooperative-matrix GEMM self-check failed on ", ctx_->device_name(),
                           " (max |diff| ", max_abs_diff(got, want), " on a 40x70x37 f16 product)");
    TB_CHECK(gemm_forced_ == false, BackendError, what);
    std::fprintf(stderr, "tensorbridge: %s; f16 products use the plain shaders\n", what.c_str());
    return false;
  }
  /** A GEMM operand: packed f16 for the cooperative-matrix shader, else widened to f32. */
  Tensor operand(const Tensor& t, bool coop) { return coop ? device(t) : input(t); }
  /** Rounds an f32 result to the op's storage dtype. */
  Tensor finish(const Tensor& y, DType d) { return d == DType::F32 ? y : cast(y, d); }

  /** The pipeline of shader `name` specialized with `spec`, created once per (name, spec). */
  const Pipeline& pipeline(std::string_view name, const std::vector<uint32_t>& spec) {
    std::string key(name);
    for (uint32_t v : spec) key += "," + std::to_string(v);
    auto it = pipelines_.find(key);
    if (it != pipelines_.end()) return *it->second;
    const ShaderCode& code = shader_code(name);
    auto p = std::make_unique<Pipeline>(ctx_, std::string(name), code.words, code.size, code.buffers, spec);
    return *pipelines_.emplace(key, std::move(p)).first->second;
  }

  // Note [gemm tiles]: gemm.comp's tile comes from specialization constants {TX, TY, TM, TN, BK}.
  // Large products take 128x128 tiles (16x16 threads, 8x8 each, BK 8) when the device allows 256
  // invocations and the double-buffered tiles fit its shared memory; smaller ones (or devices with
  // less) take 64x64 (16x16 threads, 4x4 each, BK 16), then 32x32 (8x8 threads, 4x4, BK 8).
  // A workgroup must hold whole subgroups (256 threads do for subgroups of 32 or 64).
  std::vector<uint32_t> gemm_tile(uint32_t m, uint32_t n) const {
    const VkPhysicalDeviceLimits& lim = ctx_->properties().limits;
    uint32_t sg = ctx_->subgroup_size();
    auto fits = [&](uint32_t tx, uint32_t ty, uint32_t tm, uint32_t tn, uint32_t bk) {
      uint64_t smem = 2ull * bk * (ty * tm + 1 + tx * tn + 1) * 4;
      return (tx * ty) % sg == 0 && tx * ty <= lim.maxComputeWorkGroupInvocations &&
             tx <= lim.maxComputeWorkGroupSize[0] && ty <= lim.maxComputeWorkGroupSize[1] &&
             smem <= lim.maxComputeSharedMemorySize;
    };
    if (m >= 512 && n >= 512 && fits(16, 16, 8, 8, 8)) return {16, 16, 8, 8, 8};
    if (fits(16, 16, 4, 4, 16)) return {16, 16, 4, 4, 16};
    return {8, 8, 4, 4, 8};
  }

  // Note [coopmat tiles]: gemm_coopmat's constants are {NT, SG, WGM, WGN, SM, SN, BK}: 2x2 subgroups,
  // each SM x SN accumulators of 16x16, so a 128x128 tile for large products and 64x64 otherwise,
  // K steps of 32 (16 where shared memory is short: the emulated shader keeps f32 there). Untuned:
  // the sweep to run on a GPU is in compute/README.md.
  std::vector<uint32_t> coopmat_tile(uint32_t m, uint32_t n) const {
    const VkPhysicalDeviceLimits& lim = ctx_->properties().limits;
    // The emulated shader spreads each 16x16 matrix over "subgroups" of its own size, not the
    // device's: 128 threads, 2 elements each. llvmpipe turns barriers into coroutines, and its
    // compile time grows fast with the state each thread holds across them: 1 s here, against 10 s
    // with NVIDIA's 32 and minutes with lavapipe's own 8.
    bool real = coopmat_ == Coopmat::Real;
    uint32_t sg = real ? ctx_->subgroup_size() : 128, half = real ? 2 : 4;
    auto fits = [&](uint32_t s, uint32_t bk) {
      uint32_t bm = 2 * s * 16, nt = 4 * sg;
      uint64_t smem = uint64_t(bm) * (bk + 8) * half + uint64_t(bk) * (bm + 8) * half + 4 * 256 * 4;
      return nt <= lim.maxComputeWorkGroupInvocations && nt <= lim.maxComputeWorkGroupSize[0] &&
             smem <= lim.maxComputeSharedMemorySize && (bm * bk) % nt == 0;
    };
    if (!coopmat_tile_.empty()) {  // TB_VK_COOPMAT_TILE, checked in the constructor
      const auto& t = coopmat_tile_;
      return {t[0] * t[1] * sg, sg, t[0], t[1], t[2], t[3], t[4]};
    }
    for (uint32_t s : {4u, 2u}) {
      if (s == 4 && (m < 512 || n < 512)) continue;
      for (uint32_t bk : {32u, 16u})
        if (fits(s, bk)) return {4 * sg, sg, 2, 2, s, s, bk};
    }
    return {4 * sg, sg, 2, 2, 1, 1, 16};
  }

  /** TB_VK_COOPMAT_TILE="WGM,WGN,SM,SN,BK" (a tuning knob for a GPU session's tile sweep): five
   *  positive numbers, BK a multiple of 16, the workgroup within the device's limits. */
  std::vector<uint32_t> parse_coopmat_tile(const std::string& text) const {
    std::vector<uint32_t> t;
    size_t pos = 0;
    while (pos <= text.size() && t.size() < 6) {
      size_t end = text.find(',', pos);
      if (end == std::string::npos) end = text.size();
      std::string part = text.substr(pos, end - pos);
      bool digits = !part.empty() && part.size() <= 4 && part.find_first_not_of("0123456789") == std::string::npos;
      t.push_back(digits ? uint32_t(std::stoul(part)) : 0);
      pos = end + 1;
    }
    bool ok = t.size() == 5 && std::find(t.begin(), t.end(), 0u) == t.end() && t[4] % 16 == 0;
    const VkPhysicalDeviceLimits& lim = ctx_->properties().limits;
    uint32_t sg = coopmat_ == Coopmat::Real ? ctx_->subgroup_size() : 128;
    if (ok) {
      uint64_t nt = uint64_t(t[0]) * t[1] * sg, bm = 16ull * t[0] * t[2], bn = 16ull * t[1] * t[3];
      uint64_t half = coopmat_ == Coopmat::Real ? 2 : 4;
      uint64_t smem = bm * (t[4] + 8) * half + t[4] * (bn + 8) * half + uint64_t(t[0]) * t[1] * 256 * 4;
      ok = nt <= lim.maxComputeWorkGroupInvocations && nt <= lim.maxComputeWorkGroupSize[0] && (bm * t[4]) % nt == 0 &&
           (bn * t[4]) % nt == 0 && smem <= lim.maxComputeSharedMemorySize;
    }
    TB_CHECK(ok, UnsupportedError, "[vulkan] TB_VK_COOPMAT_TILE=\"", text,
             "\": want WGM,WGN,SM,SN,BK (BK a multiple of 16, WGM*WGN subgroups within the workgroup limit, "
             "tiles a multiple of the thread count, within shared memory)");
    return t;
  }

  const Pipeline& pipeline(std::string_view name) { return pipeline(name, {}); }

  std::shared_ptr<Context> ctx_;
  CommandStream stream_;
  std::shared_ptr<Registry> registry_;
  std::map<std::string, std::unique_ptr<Pipeline>, std::less<>> pipelines_;
  int index_ = 0;
  std::string gemm_shader_ = "gemm";
  bool gemm_forced_ = false;  // TB_VK_GEMM set: no shape-based choice of the skinny shader
  /** f16 x f16 products on cooperative matrices: off (f16 widened for the plain shaders), the real
   *  shaders, or their emulated doubles (tests on lavapipe). */
  enum class Coopmat { Off, Real, Emulated } coopmat_ = Coopmat::Off;
  enum class Check { Pending, Running, Passed } coopmat_check_ = Check::Pending;  // Note [...self-check]
  std::vector<uint32_t> coopmat_tile_;  // TB_VK_COOPMAT_TILE's WGM,WGN,SM,SN,BK; empty: by shape
};

}  // namespace

bool is_available() { return !device_names().empty(); }

std::vector<std::string> device_names() {
  static const std::vector<std::string> names = Context::list_devices();
  return names;
}

std::unique_ptr<Backend> make_backend(int device_index) {
  auto backend = std::make_unique<VulkanBackend>(Context::create(device_index));
  backend->set_index(device_index);
  return backend;
}

}  // namespace tb::compute::vulkan
