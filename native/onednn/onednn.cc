// oneDNN convolutions for imgclass's TensorFlow.js training on the wasm backend.
//
// tfjs-backend-wasm runs convolutions through XNNPACK compiled to 128-bit wasm SIMD, without fused
// multiply-add and on one thread per instance; its training step spends ~75 % of its time in the three
// convolutions (forward, input gradient, filter gradient). oneDNN is the CPU primitive library that
// libtensorflow and PyTorch themselves use for these kernels; called natively it runs them with
// AVX2/AVX-512 FMA at 3-4x the speed per core. The tensors stay where tfjs keeps them, on the wasm heap:
// JavaScript passes the heap's ArrayBuffer and byte offsets, and oneDNN reads and writes there in place
// (NHWC activations, HWIO filters: tfjs's layouts, so nothing is copied or reordered by us).
//
// Written against the C N-API (node_api.h) so it needs no npm package beyond Node's own headers.
#include <node_api.h>
#include <omp.h>

#include <dnnl.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

// Shape and geometry of one 2-D convolution, as the JavaScript side computes it from tfjs's Conv2DInfo.
struct ConvKey {
  int32_t v[18];  // n h w ci ho wo co kh kw sh sw dh dw padT padL padB padR flags
  bool operator<(const ConvKey& o) const { return std::memcmp(v, o.v, sizeof v) < 0; }
};
enum Flag { kBias = 1, kRelu = 2 };

// One convolution pass (forward, input gradient or filter gradient) for one shape. oneDNN picks its
// own memory layouts (format tag `any`): for AVX-512 that is channel-blocked (nChw16c), where its
// direct convolutions run 1.5-2x faster than the im2col+GEMM path it takes on plain NHWC. Tensors are
// reordered to and from tfjs's NHWC/HWIO around the call, in scratch memory; the reorders cost a few
// percent of the convolution.
struct Arg {
  int id;                    // DNNL_ARG_*
  int operand;               // which of the call's three offsets (a, b, c) holds it
  bool output;
  memory::desc user, inner;  // tfjs's layout, oneDNN's chosen one
  dnnl::reorder reorder;     // empty when the two layouts are the same
};
struct Plan {
  dnnl::primitive prim;
  Arg args[3];
  memory::desc bias;
};

// Max pooling's gradient: oneDNN's backward pass needs the forward pass's workspace (where each
// maximum came from), so the forward is recomputed into scratch memory first.
struct PoolKey {
  int32_t v[14];  // n h w c ho wo kh kw sh sw padT padL padB padR
  bool operator<(const PoolKey& o) const { return std::memcmp(v, o.v, sizeof v) < 0; }
};
struct PoolPrims {
  dnnl::primitive fwd, bwd;
  memory::desc src, dst;
  memory workspace, scratchDst;
};

struct State {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  // Primitive creation JIT-compiles code (~1 ms); a training step reuses the same few dozen shapes.
  std::map<ConvKey, std::unique_ptr<Plan>> plans[3];
  // Scratch for the reordered tensors of the call in progress (calls on one thread never overlap).
  std::vector<char> scratch[3];
  std::map<PoolKey, std::unique_ptr<PoolPrims>> pools;
};

State& state() {
  // One per thread: each imgclass training replica is a worker thread with its own wasm instance,
  // and oneDNN engines/streams/primitives are not meant to be shared across concurrent callers here.
  thread_local State s;
  return s;
}

void* scratchFor(State& st, int i, size_t bytes) {
  // 64-byte aligned, as oneDNN's own allocations are.
  std::vector<char>& v = st.scratch[i];
  if (v.size() < bytes + 64) v.resize(bytes + 64);
  uintptr_t p = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<void*>((p + 63) & ~uintptr_t(63));
}

Plan& plan(const ConvKey& k, int kind) {
  State& st = state();
  auto it = st.plans[kind].find(k);
  if (it != st.plans[kind].end()) return *it->second;
  const int32_t* v = k.v;
  const memory::dim n = v[0], h = v[1], w = v[2], ci = v[3], ho = v[4], wo = v[5], co = v[6];
  const memory::dim kh = v[7], kw = v[8], sh = v[9], sw = v[10], dh = v[11], dw = v[12];
  const memory::dims strides = {sh, sw}, dil = {dh - 1, dw - 1}, padl = {v[13], v[14]}, padr = {v[15], v[16]};
  const memory::desc src({n, ci, h, w}, dt::f32, tag::nhwc), weights({co, ci, kh, kw}, dt::f32, tag::hwio),
      dst({n, co, ho, wo}, dt::f32, tag::nhwc);
  // The input gradient of a convolution with very few input channels (the RGB stem) is 2.5x slower
  // blocked than on NHWC (and training never needs it: the images are not variables).
  const bool plain = kind == 1 && ci < 16;
  const memory::desc asrc = plain ? src : memory::desc(src.dims(), dt::f32, tag::any),
                     aweights = plain ? weights : memory::desc(weights.dims(), dt::f32, tag::any),
                     adst = plain ? dst : memory::desc(dst.dims(), dt::f32, tag::any);
  auto p = std::make_unique<Plan>();
  p->bias = memory::desc({co}, dt::f32, tag::x);
  auto fwdDesc = [&](const memory::desc& s_, const memory::desc& w_, const memory::desc& d_, bool bias) {
    return bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                      dnnl::algorithm::convolution_direct, s_, w_, p->bias, d_, strides, dil, padl, padr)
                : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                      dnnl::algorithm::convolution_direct, s_, w_, d_, strides, dil, padl, padr);
  };
  memory::desc inner[3];
  if (kind == 0) {
    dnnl::primitive_attr attr;
    if (v[17] & kRelu) {
      dnnl::post_ops ops;
      ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      attr.set_post_ops(ops);
    }
    auto pd = dnnl::convolution_forward::primitive_desc(fwdDesc(asrc, aweights, adst, v[17] & kBias), attr, st.eng);
    p->prim = dnnl::convolution_forward(pd);
    p->args[0] = {DNNL_ARG_SRC, 0, false, src, pd.src_desc(), {}};
    p->args[1] = {DNNL_ARG_WEIGHTS, 1, false, weights, pd.weights_desc(), {}};
    p->args[2] = {DNNL_ARG_DST, 2, true, dst, pd.dst_desc(), {}};
  } else {
    auto hint = dnnl::convolution_forward::primitive_desc(fwdDesc(asrc, aweights, adst, false), st.eng);
    if (kind == 1) {
      auto d = dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct, asrc, aweights, adst,
                                                     strides, dil, padl, padr);
      auto pd = dnnl::convolution_backward_data::primitive_desc(d, st.eng, hint);
      p->prim = dnnl::convolution_backward_data(pd);
      p->args[0] = {DNNL_ARG_DIFF_DST, 0, false, dst, pd.diff_dst_desc(), {}};
      p->args[1] = {DNNL_ARG_WEIGHTS, 1, false, weights, pd.weights_desc(), {}};
      p->args[2] = {DNNL_ARG_DIFF_SRC, 2, true, src, pd.diff_src_desc(), {}};
    } else {
      auto d = dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, asrc, aweights, adst,
                                                        strides, dil, padl, padr);
      auto pd = dnnl::convolution_backward_weights::primitive_desc(d, st.eng, hint);
      p->prim = dnnl::convolution_backward_weights(pd);
      p->args[0] = {DNNL_ARG_SRC, 0, false, src, pd.src_desc(), {}};
      p->args[1] = {DNNL_ARG_DIFF_DST, 1, false, dst, pd.diff_dst_desc(), {}};
      p->args[2] = {DNNL_ARG_DIFF_WEIGHTS, 2, true, weights, pd.diff_weights_desc(), {}};
    }
  }
  for (Arg& arg : p->args) {
    if (arg.user == arg.inner) continue;
    arg.reorder = arg.output ? dnnl::reorder(dnnl::reorder::primitive_desc(st.eng, arg.inner, st.eng, arg.user))
                             : dnnl::reorder(dnnl::reorder::primitive_desc(st.eng, arg.user, st.eng, arg.inner));
  }
  return *st.plans[kind].emplace(k, std::move(p)).first->second;
}

napi_value throwError(napi_env env, const std::string& msg) {
  napi_throw_error(env, nullptr, msg.c_str());
  return nullptr;
}

bool getInt(napi_env env, napi_value v, int64_t* out) {
  return napi_get_value_int64(env, v, out) == napi_ok;
}

bool getDouble(napi_env env, napi_value v, double* out) { return napi_get_value_double(env, v, out) == napi_ok; }

// Whether `bytes` bytes at byte offset `off` lie inside a heap of `heapBytes`: every kernel checks
// its tensors with this before touching them, since a bad offset would write outside the wasm heap.
bool inHeap(size_t heapBytes, int64_t off, size_t bytes) { return off >= 0 && size_t(off) + bytes <= heapBytes; }

// conv(kind, heap: ArrayBuffer, a, b, c, bias, params: Int32Array(18))
//   kind 0 forward:         a = x,  b = filter, c = y   (bias offset or -1)
//   kind 1 input gradient:  a = dy, b = filter, c = dx
//   kind 2 filter gradient: a = x,  b = dy,     c = dw
// Offsets are byte offsets into heap; the caller has checked the shapes against the tensors.
napi_value Conv(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc != 7) {
    return throwError(env, "imgclass_onednn.conv: expected 7 arguments");
  }
  int64_t kind, a, b, c, bias;
  if (!getInt(env, argv[0], &kind) || !getInt(env, argv[2], &a) || !getInt(env, argv[3], &b) ||
      !getInt(env, argv[4], &c) || !getInt(env, argv[5], &bias)) {
    return throwError(env, "imgclass_onednn.conv: kind and offsets must be numbers");
  }
  void* heap = nullptr;
  size_t heapBytes = 0;
  if (napi_get_arraybuffer_info(env, argv[1], &heap, &heapBytes) != napi_ok) {
    return throwError(env, "imgclass_onednn.conv: heap must be an ArrayBuffer");
  }
  napi_typedarray_type type;
  size_t length = 0;
  void* pdata = nullptr;
  if (napi_get_typedarray_info(env, argv[6], &type, &length, &pdata, nullptr, nullptr) != napi_ok ||
      type != napi_int32_array || length != 18) {
    return throwError(env, "imgclass_onednn.conv: params must be an Int32Array of 18");
  }
  ConvKey key;
  std::memcpy(key.v, pdata, sizeof key.v);
  if (kind != 0) key.v[17] = 0;  // gradients ignore the forward's bias / relu
  const int32_t* v = key.v;
  const size_t xBytes = size_t(v[0]) * v[1] * v[2] * v[3] * 4, yBytes = size_t(v[0]) * v[4] * v[5] * v[6] * 4,
               wBytes = size_t(v[7]) * v[8] * v[3] * v[6] * 4;
  const size_t sizes[3][3] = {{xBytes, wBytes, yBytes}, {yBytes, wBytes, xBytes}, {xBytes, yBytes, wBytes}};
  if (kind < 0 || kind > 2) return throwError(env, "imgclass_onednn.conv: kind must be 0, 1 or 2");
  if (!inHeap(heapBytes, a, sizes[kind][0]) || !inHeap(heapBytes, b, sizes[kind][1]) || !inHeap(heapBytes, c, sizes[kind][2]) ||
      (bias >= 0 && !inHeap(heapBytes, bias, size_t(v[6]) * 4))) {
    return throwError(env, "imgclass_onednn.conv: a tensor lies outside the heap");
  }
  char* base = static_cast<char*>(heap);
  const int64_t offsets[3] = {a, b, c};
  if (kind == 0 && bias >= 0 && !(v[17] & kBias)) return throwError(env, "imgclass_onednn.conv: bias without flag");
  try {
    State& st = state();
    Plan& p = plan(key, int(kind));
    std::unordered_map<int, memory> args;
    memory inner[3], user[3];
    for (int i = 0; i < 3; i++) {
      const Arg& arg = p.args[i];
      user[i] = memory(arg.user, st.eng, base + offsets[arg.operand]);
      if (!arg.reorder) {
        args.emplace(arg.id, user[i]);
        continue;
      }
      inner[i] = memory(arg.inner, st.eng, scratchFor(st, i, arg.inner.get_size()));
      if (!arg.output) arg.reorder.execute(st.strm, user[i], inner[i]);
      args.emplace(arg.id, inner[i]);
    }
    if (kind == 0 && bias >= 0) args.emplace(DNNL_ARG_BIAS, memory(p.bias, st.eng, base + bias));
    p.prim.execute(st.strm, args);
    for (int i = 0; i < 3; i++) {
      if (p.args[i].output && p.args[i].reorder) p.args[i].reorder.execute(st.strm, inner[i], user[i]);
    }
    st.strm.wait();
  } catch (const dnnl::error& e) {
    std::string m = "oneDNN: ";
    m += e.what();
    m += " (status " + std::to_string(int(e.status)) + ")";
    return throwError(env, m);
  }
  return nullptr;
}

bool heapArg(napi_env env, napi_value v, char** base, size_t* bytes) {
  void* data = nullptr;
  if (napi_get_arraybuffer_info(env, v, &data, bytes) != napi_ok) return false;
  *base = static_cast<char*>(data);
  return true;
}

// The argument list (heap, n integers, one number) of the batch-norm kernels; false on any mismatch.
bool heapIntsAndNumber(napi_env env, napi_callback_info info, size_t n, char** base, size_t* heapBytes, int64_t* ints, double* number) {
  napi_value argv[16];
  size_t argc = 16;
  if (n + 2 > argc || napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc != n + 2 ||
      !heapArg(env, argv[0], base, heapBytes) || !getDouble(env, argv[n + 1], number)) {
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    if (!getInt(env, argv[i + 1], &ints[i])) return false;
  }
  return true;
}

// maxPoolGrad(heap, x, dy, dx, params: Int32Array(14))
napi_value MaxPoolGrad(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc != 5) {
    return throwError(env, "imgclass_onednn.maxPoolGrad: expected 5 arguments");
  }
  char* base = nullptr;
  size_t heapBytes = 0;
  int64_t x, dy, dx;
  if (!heapArg(env, argv[0], &base, &heapBytes) || !getInt(env, argv[1], &x) || !getInt(env, argv[2], &dy) ||
      !getInt(env, argv[3], &dx)) {
    return throwError(env, "imgclass_onednn.maxPoolGrad: expected (ArrayBuffer, offsets...)");
  }
  napi_typedarray_type type;
  size_t length = 0;
  void* pdata = nullptr;
  if (napi_get_typedarray_info(env, argv[4], &type, &length, &pdata, nullptr, nullptr) != napi_ok ||
      type != napi_int32_array || length != 14) {
    return throwError(env, "imgclass_onednn.maxPoolGrad: params must be an Int32Array of 14");
  }
  PoolKey key;
  std::memcpy(key.v, pdata, sizeof key.v);
  const int32_t* v = key.v;
  const size_t xBytes = size_t(v[0]) * v[1] * v[2] * v[3] * 4, yBytes = size_t(v[0]) * v[4] * v[5] * v[3] * 4;
  if (!inHeap(heapBytes, x, xBytes) || !inHeap(heapBytes, dy, yBytes) || !inHeap(heapBytes, dx, xBytes)) {
    return throwError(env, "imgclass_onednn.maxPoolGrad: a tensor lies outside the heap");
  }
  try {
    State& st = state();
    auto it = st.pools.find(key);
    if (it == st.pools.end()) {
      auto p = std::make_unique<PoolPrims>();
      p->src = memory::desc({v[0], v[3], v[1], v[2]}, dt::f32, tag::nhwc);
      p->dst = memory::desc({v[0], v[3], v[4], v[5]}, dt::f32, tag::nhwc);
      const memory::dims strides = {v[8], v[9]}, kernel = {v[6], v[7]}, padl = {v[10], v[11]}, padr = {v[12], v[13]};
      auto fd = dnnl::pooling_forward::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::pooling_max,
                                            p->src, p->dst, strides, kernel, padl, padr);
      auto fpd = dnnl::pooling_forward::primitive_desc(fd, st.eng);
      auto bd = dnnl::pooling_backward::desc(dnnl::algorithm::pooling_max, p->src, p->dst, strides, kernel, padl, padr);
      auto bpd = dnnl::pooling_backward::primitive_desc(bd, st.eng, fpd);
      p->fwd = dnnl::pooling_forward(fpd);
      p->bwd = dnnl::pooling_backward(bpd);
      p->workspace = memory(fpd.workspace_desc(), st.eng);
      p->scratchDst = memory(p->dst, st.eng);
      it = st.pools.emplace(key, std::move(p)).first;
    }
    PoolPrims& p = *it->second;
    p.fwd.execute(st.strm, {{DNNL_ARG_SRC, memory(p.src, st.eng, base + x)},
                            {DNNL_ARG_DST, p.scratchDst},
                            {DNNL_ARG_WORKSPACE, p.workspace}});
    p.bwd.execute(st.strm, {{DNNL_ARG_DIFF_DST, memory(p.dst, st.eng, base + dy)},
                            {DNNL_ARG_DIFF_SRC, memory(p.src, st.eng, base + dx)},
                            {DNNL_ARG_WORKSPACE, p.workspace}});
    st.strm.wait();
  } catch (const dnnl::error& e) {
    return throwError(env, std::string("oneDNN max pool gradient: ") + e.what());
  }
  return nullptr;
}

// reduceRows(heap, src, dst, rows, cols, mean): dst[c] = sum (or mean) over r of src[r * cols + c].
napi_value ReduceRows(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc != 6) {
    return throwError(env, "imgclass_onednn.reduceRows: expected 6 arguments");
  }
  char* base = nullptr;
  size_t heapBytes = 0;
  int64_t src, dst, rows, cols, mean;
  if (!heapArg(env, argv[0], &base, &heapBytes) || !getInt(env, argv[1], &src) || !getInt(env, argv[2], &dst) ||
      !getInt(env, argv[3], &rows) || !getInt(env, argv[4], &cols) || !getInt(env, argv[5], &mean) ||
      rows < 1 || cols < 1) {
    return throwError(env, "imgclass_onednn.reduceRows: expected (ArrayBuffer, offsets, rows >= 1, cols >= 1, mean)");
  }
  if (!inHeap(heapBytes, src, size_t(rows) * cols * 4) || !inHeap(heapBytes, dst, size_t(cols) * 4)) {
    return throwError(env, "imgclass_onednn.reduceRows: a tensor lies outside the heap");
  }
  // A plain loop, not oneDNN's reduction primitive: for this shape (many rows, 64-512 columns) oneDNN
  // 2.6 runs a reference implementation, 3x slower than even tfjs-wasm's transpose-then-reduce.
  // Partial sums in float over blocks of rows, added up in double: close to tfjs's float32 results
  // without their rounding growth over 16k-row reductions.
  const float* in = reinterpret_cast<const float*>(base + src);
  float* out = reinterpret_cast<float*>(base + dst);
  std::vector<double> total(static_cast<size_t>(cols), 0.0);
  std::vector<float> part(static_cast<size_t>(cols));
  constexpr int64_t kBlock = 64;
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    std::fill(part.begin(), part.end(), 0.f);
    const int64_t r1 = std::min(rows, r0 + kBlock);
    for (int64_t r = r0; r < r1; r++) {
      const float* row = in + r * cols;
      float* pp = part.data();
      for (int64_t c = 0; c < cols; c++) pp[c] += row[c];
    }
    for (int64_t c = 0; c < cols; c++) total[size_t(c)] += part[size_t(c)];
  }
  const double scale = mean ? 1.0 / double(rows) : 1.0;
  for (int64_t c = 0; c < cols; c++) out[c] = float(total[size_t(c)] * scale);
  return nullptr;
}

bool floatArray(napi_env env, napi_value v, float** data, size_t* length) {
  napi_typedarray_type type;
  void* p = nullptr;
  if (napi_get_typedarray_info(env, v, &type, length, &p, nullptr, nullptr) != napi_ok || type != napi_float32_array) {
    return false;
  }
  *data = static_cast<float*>(p);  // already advanced by the array's byte offset
  return true;
}

// weightedSum(out: Float32Array, inputs: Float32Array[], weights: number[]): out = sum_k weights[k] x inputs[k].
// The training coordinator's gradient average over replicas (11M floats per replica for ResNet-18):
// a JavaScript loop over SharedArrayBuffers takes 40-65 ms per step, this ~10 ms on all cores.
napi_value WeightedSum(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc != 3) {
    return throwError(env, "imgclass_onednn.weightedSum: expected 3 arguments");
  }
  float* out = nullptr;
  size_t n = 0;
  uint32_t k = 0, kw = 0;
  if (!floatArray(env, argv[0], &out, &n) || napi_get_array_length(env, argv[1], &k) != napi_ok ||
      napi_get_array_length(env, argv[2], &kw) != napi_ok || k != kw || k == 0) {
    return throwError(env, "imgclass_onednn.weightedSum: expected (Float32Array, Float32Array[], number[]) of equal counts");
  }
  std::vector<const float*> in(k);
  std::vector<float> w(k);
  for (uint32_t i = 0; i < k; i++) {
    napi_value a, b;
    float* d = nullptr;
    size_t len = 0;
    double wd = 0;
    if (napi_get_element(env, argv[1], i, &a) != napi_ok || !floatArray(env, a, &d, &len) || len != n ||
        napi_get_element(env, argv[2], i, &b) != napi_ok || !getDouble(env, b, &wd)) {
      return throwError(env, "imgclass_onednn.weightedSum: every input must be a Float32Array as long as out, with a numeric weight");
    }
    in[i] = d;
    w[i] = float(wd);
  }
  const int64_t len = int64_t(n);
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < len; j++) {
    float acc = 0.f;
    for (uint32_t i = 0; i < k; i++) acc += w[i] * in[i][j];
    out[j] = acc;
  }
  return nullptr;
}

// momentumUpdate(heap, weights, accumulator, grad: Float32Array, lr, momentum, nesterov, weightDecay)
// In place on the wasm heap, with the float32 operations in the order of tfjs's MomentumOptimizer
// applied to g + weightDecay x w (so it gives the same bits as the tensor-op path):
//   g' = g + w*wd;  acc = acc*m + g';  w = (-lr)*(g' + acc*m) + w   (Nesterov)   or   w = (-lr)*acc + w.
// One pass over memory instead of ~7 tensor ops and a copy of the gradient into the heap.
napi_value MomentumUpdate(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc != 8) {
    return throwError(env, "imgclass_onednn.momentumUpdate: expected 8 arguments");
  }
  char* base = nullptr;
  size_t heapBytes = 0, n = 0;
  int64_t wOff, aOff;
  float* g = nullptr;
  double lr, m, wd;
  bool nesterov = false;
  if (!heapArg(env, argv[0], &base, &heapBytes) || !getInt(env, argv[1], &wOff) || !getInt(env, argv[2], &aOff) ||
      !floatArray(env, argv[3], &g, &n) || !getDouble(env, argv[4], &lr) || !getDouble(env, argv[5], &m) ||
      napi_get_value_bool(env, argv[6], &nesterov) != napi_ok || !getDouble(env, argv[7], &wd)) {
    return throwError(env, "imgclass_onednn.momentumUpdate: bad arguments");
  }
  if (!inHeap(heapBytes, wOff, n * 4) || !inHeap(heapBytes, aOff, n * 4)) return throwError(env, "imgclass_onednn.momentumUpdate: a tensor lies outside the heap");
  float* w = reinterpret_cast<float*>(base + wOff);
  float* acc = reinterpret_cast<float*>(base + aOff);
  const float c = -float(lr), mf = float(m), wdf = float(wd);
  const int64_t len = int64_t(n);
  // On all cores for the large kernels: with one replica on every core this pass is on the step's critical path.
#pragma omp parallel for schedule(static) if (len > 32768)
  for (int64_t j = 0; j < len; j++) {
    const float gj = wdf != 0.f ? g[j] + w[j] * wdf : g[j];
    const float a = acc[j] * mf + gj;
    acc[j] = a;
    w[j] = nesterov ? c * (gj + a * mf) + w[j] : c * a + w[j];
  }
  return nullptr;
}

// Batch normalisation in training mode over the rows of an NHWC tensor (rows = N*H*W, cols = C), as
// tfjs-layers computes it (tf.moments then tf.batchNorm: biased variance) but in two passes over the
// data instead of ~12 tensor ops, and its gradient in two more. Plain loops: oneDNN's batch
// normalization primitive wants its own (blocked) layout for speed and a workspace, and on NHWC f32 it
// is no faster than this. Statistics accumulate in double.
//
// bnForward(heap, x, scale, offset, y, mean, variance, rows, cols, epsilon)
napi_value BnForward(napi_env env, napi_callback_info info) {
  char* base = nullptr;
  size_t heapBytes = 0;
  int64_t o[8];
  double eps = 0;
  if (!heapIntsAndNumber(env, info, 8, &base, &heapBytes, o, &eps)) return throwError(env, "imgclass_onednn.bnForward: bad arguments");
  const int64_t rows = o[6], cols = o[7];
  auto fits = [&](int64_t off, int64_t count) { return inHeap(heapBytes, off, size_t(count) * 4); };
  if (rows < 1 || cols < 1 || !fits(o[0], rows * cols) || !fits(o[1], cols) || !fits(o[2], cols) ||
      !fits(o[3], rows * cols) || !fits(o[4], cols) || !fits(o[5], cols)) {
    return throwError(env, "imgclass_onednn.bnForward: a tensor lies outside the heap");
  }
  const float* x = reinterpret_cast<const float*>(base + o[0]);
  const float* scale = reinterpret_cast<const float*>(base + o[1]);
  const float* offset = reinterpret_cast<const float*>(base + o[2]);
  float* y = reinterpret_cast<float*>(base + o[3]);
  float* mean = reinterpret_cast<float*>(base + o[4]);
  float* variance = reinterpret_cast<float*>(base + o[5]);
  std::vector<double> sum(static_cast<size_t>(cols), 0.0), sq(static_cast<size_t>(cols), 0.0);
  std::vector<float> m(static_cast<size_t>(cols)), a(static_cast<size_t>(cols)), b(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; r++) {
    const float* row = x + r * cols;
    for (int64_t c = 0; c < cols; c++) sum[size_t(c)] += row[c];
  }
  for (int64_t c = 0; c < cols; c++) m[size_t(c)] = float(sum[size_t(c)] / double(rows));
  for (int64_t r = 0; r < rows; r++) {
    const float* row = x + r * cols;
    const float* mm = m.data();
    for (int64_t c = 0; c < cols; c++) {
      const double d = double(row[c]) - double(mm[c]);
      sq[size_t(c)] += d * d;
    }
  }
  for (int64_t c = 0; c < cols; c++) {
    const float v = float(sq[size_t(c)] / double(rows));
    mean[c] = m[size_t(c)];
    variance[c] = v;
    const float inv = 1.f / std::sqrt(v + float(eps));
    a[size_t(c)] = scale[c] * inv;                       // y = x * a + b
    b[size_t(c)] = offset[c] - m[size_t(c)] * a[size_t(c)];
  }
  for (int64_t r = 0; r < rows; r++) {
    const float* row = x + r * cols;
    float* out = y + r * cols;
    const float *aa = a.data(), *bb = b.data();
    for (int64_t c = 0; c < cols; c++) out[c] = row[c] * aa[c] + bb[c];
  }
  return nullptr;
}

// bnBackward(heap, dy, x, scale, mean, variance, dx, dscale, doffset, rows, cols, epsilon):
//   xhat = (x - mean) / sqrt(variance + eps);  doffset = sum dy;  dscale = sum dy * xhat;
//   dx = scale / sqrt(variance + eps) * (dy - doffset / rows - xhat * dscale / rows)
// which is the gradient through the batch statistics too (tf.moments then tf.batchNorm).
napi_value BnBackward(napi_env env, napi_callback_info info) {
  char* base = nullptr;
  size_t heapBytes = 0;
  int64_t o[10];
  double eps = 0;
  if (!heapIntsAndNumber(env, info, 10, &base, &heapBytes, o, &eps)) return throwError(env, "imgclass_onednn.bnBackward: bad arguments");
  const int64_t rows = o[8], cols = o[9];
  auto fits = [&](int64_t off, int64_t count) { return inHeap(heapBytes, off, size_t(count) * 4); };
  if (rows < 1 || cols < 1 || !fits(o[0], rows * cols) || !fits(o[1], rows * cols) || !fits(o[2], cols) ||
      !fits(o[3], cols) || !fits(o[4], cols) || !fits(o[5], rows * cols) || !fits(o[6], cols) ||
      !fits(o[7], cols)) {
    return throwError(env, "imgclass_onednn.bnBackward: a tensor lies outside the heap");
  }
  const float* dy = reinterpret_cast<const float*>(base + o[0]);
  const float* x = reinterpret_cast<const float*>(base + o[1]);
  const float* scale = reinterpret_cast<const float*>(base + o[2]);
  const float* mean = reinterpret_cast<const float*>(base + o[3]);
  const float* variance = reinterpret_cast<const float*>(base + o[4]);
  float* dx = reinterpret_cast<float*>(base + o[5]);
  float* dscale = reinterpret_cast<float*>(base + o[6]);
  float* doffset = reinterpret_cast<float*>(base + o[7]);
  const size_t C = static_cast<size_t>(cols);
  std::vector<float> inv(C), k1(C), k2(C), k3(C);
  std::vector<double> sdy(C, 0.0), sdyx(C, 0.0);
  for (size_t c = 0; c < C; c++) inv[c] = 1.f / std::sqrt(variance[c] + float(eps));
  for (int64_t r = 0; r < rows; r++) {
    const float* g = dy + r * cols;
    const float* xr = x + r * cols;
    for (size_t c = 0; c < C; c++) {
      sdy[c] += g[c];
      sdyx[c] += double(g[c]) * (double(xr[c]) - double(mean[c]));
    }
  }
  const double n = double(rows);
  for (size_t c = 0; c < C; c++) {
    const double db = sdy[c], dg = sdyx[c] * inv[c];
    doffset[c] = float(db);
    dscale[c] = float(dg);
    // dx = x * k1 + dy * k2 + k3
    const double s = double(scale[c]) * inv[c];
    k2[c] = float(s);
    k1[c] = float(-s * dg * inv[c] / n);
    k3[c] = float(-s * db / n + s * dg * inv[c] * double(mean[c]) / n);
  }
  for (int64_t r = 0; r < rows; r++) {
    const float* g = dy + r * cols;
    const float* xr = x + r * cols;
    float* out = dx + r * cols;
    const float *a = k1.data(), *b = k2.data(), *c3 = k3.data();
    for (size_t c = 0; c < C; c++) out[c] = xr[c] * a[c] + g[c] * b[c] + c3[c];
  }
  return nullptr;
}

// sumSquares(heap, offset, n): sum of x^2 over n floats, in double (the loss's weight-decay term).
napi_value SumSquares(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  char* base = nullptr;
  size_t heapBytes = 0;
  int64_t off, n;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc != 3 ||
      !heapArg(env, argv[0], &base, &heapBytes) || !getInt(env, argv[1], &off) || !getInt(env, argv[2], &n) ||
      off < 0 || n < 0 || size_t(off) + size_t(n) * 4 > heapBytes) {
    return throwError(env, "imgclass_onednn.sumSquares: expected (ArrayBuffer, offset, count) within the heap");
  }
  const float* x = reinterpret_cast<const float*>(base + off);
  double total = 0;
  for (int64_t j = 0; j < n; j++) total += double(x[j]) * double(x[j]);
  napi_value out;
  napi_create_double(env, total, &out);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Whole-network inference. Serving and evaluation run a trained ResNet forward only, where tfjs's
// op-by-op path spends most of its time outside the convolutions: a reorder NHWC -> blocked and back
// around each one, then batch norm, ReLU, add and pooling as separate passes over the wasm heap. Here
// the JavaScript side (lib/engine/native-forward.ts) folds every batch norm into its convolution's
// weights and bias and hands over the list of what is left; the network keeps activations in the
// layout oneDNN's convolutions prefer (channel-blocked) from op to op, fuses ReLU and the residual
// sum into the convolutions as post-ops, and reorders only the images in and nothing out (the logits
// are plain [n, classes]). Primitives are created once per power-of-two batch size (other sizes run as
// chunks of those); activation buffers are shared slots reused as soon as their value is dead, so a
// batch needs a few activations' worth of memory.
//
// An op is 16 integers: type, src (index of the op whose output it reads, -1 = the images), res (op
// whose output a conv adds before its ReLU, -1 none), relu, then
//   conv:  co kh kw sh sw padT padL padB padR dh dw   weights: HWIO kernel (co*ci*kh*kw), bias (co)
//   max pool:  -  kh kw sh sw padT padL padB padR
//   global average pool, dense: units                weights: [in, units] kernel, bias (units)
// The last op is a dense layer; its output is the network's.
enum NetOpType { kNetConv = 0, kNetMaxPool = 1, kNetAvgPool = 2, kNetDense = 3 };
constexpr int kNetOpInts = 16;

struct NetOp {
  int32_t p[kNetOpInts];
  memory::dim c = 0, h = 0, w = 0;     // input (per image)
  memory::dim oc = 0, oh = 0, ow = 0;  // output (per image); dense: oh = ow = 0 (2-D)
  std::vector<float> weights, bias;
  memory::desc userWeights;
  // Weights reordered to what each batch size's primitive asked for (almost always one layout).
  std::vector<std::pair<memory::desc, memory>> packed;
  memory biasMem;
};

// One argument of one step: fixed memory (weights), or an activation whose buffer is bound per call.
enum Bind { kFixed = -1, kImages = -2, kLogits = -3 };
struct StepArg {
  int id;
  memory mem;
  int slot;  // >= 0: activation slot; or a Bind
};
struct Step {
  dnnl::primitive prim;
  std::vector<StepArg> args;
};
struct Exec {
  std::vector<Step> steps;
  std::vector<size_t> slotBytes;
};

struct Network {
  static constexpr uint32_t kMagic = 0x6e657431;
  uint32_t magic = kMagic;
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  memory::dim h = 0, w = 0, c = 0, classes = 0;
  std::vector<NetOp> ops;
  std::map<memory::dim, std::unique_ptr<Exec>> execs;
  std::vector<std::vector<char>> slots;
  bool disposed = false;
};

void* aligned(std::vector<char>& v, size_t bytes) {
  if (v.size() < bytes + 64) v.resize(bytes + 64);
  uintptr_t p = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<void*>((p + 63) & ~uintptr_t(63));
}

memory packedWeights(Network& net, NetOp& op, const memory::desc& want) {
  for (auto& pw : op.packed) {
    if (pw.first == want) return pw.second;
  }
  memory user(op.userWeights, net.eng, op.weights.data());
  memory m(want, net.eng);
  dnnl::reorder(user, m).execute(net.strm, user, m);
  net.strm.wait();
  op.packed.emplace_back(want, m);
  return m;
}

dnnl::primitive_attr netAttr(bool sum, bool relu) {
  dnnl::primitive_attr attr;
  dnnl::post_ops ops;
  if (sum) ops.append_sum(1.f);
  if (relu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  attr.set_post_ops(ops);
  return attr;
}

// Plans one batch size: primitives, the layout of every activation, and which slot holds it.
std::unique_ptr<Exec> planNetwork(Network& net, memory::dim n) {
  auto ex = std::make_unique<Exec>();
  const int count = int(net.ops.size());
  std::vector<int> lastUse(static_cast<size_t>(count), -1);
  for (int i = 0; i < count; i++) {
    const int32_t* p = net.ops[size_t(i)].p;
    if (p[1] >= 0) lastUse[size_t(p[1])] = std::max(lastUse[size_t(p[1])], i);
    if (p[2] >= 0) lastUse[size_t(p[2])] = std::max(lastUse[size_t(p[2])], i);
  }
  std::vector<memory::desc> desc(static_cast<size_t>(count));
  std::vector<int> slotOf(static_cast<size_t>(count), -1);
  std::vector<int> freeSlots;
  auto takeSlot = [&](size_t bytes) {
    int s;
    if (!freeSlots.empty()) {
      s = freeSlots.back();
      freeSlots.pop_back();
    } else {
      s = int(ex->slotBytes.size());
      ex->slotBytes.push_back(0);
    }
    ex->slotBytes[size_t(s)] = std::max(ex->slotBytes[size_t(s)], bytes);
    return s;
  };
  const memory::desc images({n, net.c, net.h, net.w}, dt::f32, tag::nhwc);
  auto valueDesc = [&](int v) { return v < 0 ? images : desc[size_t(v)]; };
  auto valueArg = [&](int id, int v) {
    return StepArg{id, memory(valueDesc(v), net.eng, DNNL_MEMORY_NONE), v < 0 ? int(kImages) : slotOf[size_t(v)]};
  };
  // The op's input in layout `want`: the value itself, or a reorder into a temporary slot.
  std::vector<int> temps;
  auto input = [&](int v, const memory::desc& want) {
    if (want == valueDesc(v)) return valueArg(DNNL_ARG_SRC, v);
    const int s = takeSlot(want.get_size());
    temps.push_back(s);
    Step r;
    r.prim = dnnl::reorder(dnnl::reorder::primitive_desc(net.eng, valueDesc(v), net.eng, want));
    r.args.push_back(valueArg(DNNL_ARG_FROM, v));
    r.args.push_back({DNNL_ARG_TO, memory(want, net.eng, DNNL_MEMORY_NONE), s});
    ex->steps.push_back(std::move(r));
    return StepArg{DNNL_ARG_SRC, memory(want, net.eng, DNNL_MEMORY_NONE), s};
  };
  const auto inf = dnnl::prop_kind::forward_inference;
  for (int i = 0; i < count; i++) {
    NetOp& op = net.ops[size_t(i)];
    const int32_t* p = op.p;
    const bool last = i == count - 1;
    const memory::desc src = valueDesc(p[1]);
    Step step;
    memory::desc dst;
    temps.clear();
    if (p[0] == kNetConv) {
      const memory::dims strides = {p[7], p[8]}, dil = {p[13] - 1, p[14] - 1}, padl = {p[9], p[10]}, padr = {p[11], p[12]};
      const memory::desc anySrc({n, op.c, op.h, op.w}, dt::f32, tag::any),
          anyW({op.oc, op.c, p[5], p[6]}, dt::f32, tag::any), bias({op.oc}, dt::f32, tag::x);
      // With a residual the output starts as the residual's values, so it takes that layout.
      const memory::desc dstWant = p[2] >= 0 ? valueDesc(p[2]) : memory::desc({n, op.oc, op.oh, op.ow}, dt::f32, tag::any);
      auto d = dnnl::convolution_forward::desc(inf, dnnl::algorithm::convolution_direct, anySrc, anyW, bias, dstWant,
                                               strides, dil, padl, padr);
      auto pd = dnnl::convolution_forward::primitive_desc(d, netAttr(p[2] >= 0, p[3] != 0), net.eng);
      step.prim = dnnl::convolution_forward(pd);
      step.args.push_back(input(p[1], pd.src_desc()));
      step.args.push_back({DNNL_ARG_WEIGHTS, packedWeights(net, op, pd.weights_desc()), kFixed});
      step.args.push_back({DNNL_ARG_BIAS, op.biasMem, kFixed});
      dst = pd.dst_desc();
    } else if (p[0] == kNetMaxPool || p[0] == kNetAvgPool) {
      const bool max = p[0] == kNetMaxPool;
      const memory::dims strides = max ? memory::dims{p[7], p[8]} : memory::dims{1, 1},
                         kernel = max ? memory::dims{p[5], p[6]} : memory::dims{op.h, op.w},
                         padl = max ? memory::dims{p[9], p[10]} : memory::dims{0, 0},
                         padr = max ? memory::dims{p[11], p[12]} : memory::dims{0, 0};
      const memory::desc anyDst({n, op.oc, op.oh, op.ow}, dt::f32, tag::any);
      auto d = dnnl::pooling_forward::desc(inf, max ? dnnl::algorithm::pooling_max : dnnl::algorithm::pooling_avg_exclude_padding,
                                           src, anyDst, strides, kernel, padl, padr);
      auto pd = dnnl::pooling_forward::primitive_desc(d, net.eng);
      step.prim = dnnl::pooling_forward(pd);
      step.args.push_back(valueArg(DNNL_ARG_SRC, p[1]));
      dst = pd.dst_desc();
    } else {
      const bool flat = op.h == 0;
      const memory::desc anySrc = flat ? memory::desc({n, op.c}, dt::f32, tag::any) : memory::desc({n, op.c, op.h, op.w}, dt::f32, tag::any);
      const memory::desc anyW = flat ? memory::desc({op.oc, op.c}, dt::f32, tag::any) : memory::desc({op.oc, op.c, op.h, op.w}, dt::f32, tag::any);
      const memory::desc bias({op.oc}, dt::f32, tag::x), out({n, op.oc}, dt::f32, tag::nc);
      auto d = dnnl::inner_product_forward::desc(inf, anySrc, anyW, bias, out);
      auto pd = dnnl::inner_product_forward::primitive_desc(d, netAttr(false, p[3] != 0), net.eng);
      step.prim = dnnl::inner_product_forward(pd);
      step.args.push_back(input(p[1], pd.src_desc()));
      step.args.push_back({DNNL_ARG_WEIGHTS, packedWeights(net, op, pd.weights_desc()), kFixed});
      step.args.push_back({DNNL_ARG_BIAS, op.biasMem, kFixed});
      dst = pd.dst_desc();
    }
    desc[size_t(i)] = dst;
    if (last) {
      slotOf[size_t(i)] = kLogits;
    } else if (p[2] >= 0 && lastUse[size_t(p[2])] == i && slotOf[size_t(p[2])] >= 0) {
      slotOf[size_t(i)] = slotOf[size_t(p[2])];  // the sum runs in place over the dead residual
      ex->slotBytes[size_t(slotOf[size_t(i)])] = std::max(ex->slotBytes[size_t(slotOf[size_t(i)])], dst.get_size());
    } else {
      slotOf[size_t(i)] = takeSlot(dst.get_size());
    }
    if (p[2] >= 0 && slotOf[size_t(i)] != slotOf[size_t(p[2])]) {
      // The residual is read again later (or is the images): copy it into the output first.
      Step copy;
      copy.prim = dnnl::reorder(dnnl::reorder::primitive_desc(net.eng, valueDesc(p[2]), net.eng, dst));
      copy.args.push_back(valueArg(DNNL_ARG_FROM, p[2]));
      copy.args.push_back({DNNL_ARG_TO, memory(dst, net.eng, DNNL_MEMORY_NONE), slotOf[size_t(i)]});
      ex->steps.push_back(std::move(copy));
    }
    step.args.push_back({DNNL_ARG_DST, memory(dst, net.eng, DNNL_MEMORY_NONE), slotOf[size_t(i)]});
    ex->steps.push_back(std::move(step));
    for (int s : temps) freeSlots.push_back(s);
    for (int v : {p[1], p[2]}) {
      if (v >= 0 && lastUse[size_t(v)] == i && slotOf[size_t(v)] >= 0 && slotOf[size_t(v)] != slotOf[size_t(i)] &&
          std::find(freeSlots.begin(), freeSlots.end(), slotOf[size_t(v)]) == freeSlots.end()) {
        freeSlots.push_back(slotOf[size_t(v)]);
      }
    }
  }
  return ex;
}

void finalizeNetwork(napi_env, void* data, void*) { delete static_cast<Network*>(data); }

Network* networkArg(napi_env env, napi_value v) {
  napi_valuetype t;
  void* data = nullptr;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, &data) != napi_ok) {
    return nullptr;
  }
  Network* net = static_cast<Network*>(data);
  return net && net->magic == Network::kMagic ? net : nullptr;
}

// createNetwork(ops: Int32Array(16 x count), weights: Float32Array[], input: Int32Array [h, w, c]) -> external
// Checks every op's shapes and weight counts; copies the weights (the arrays may go away).
napi_value CreateNetwork(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  auto fail = [&](const std::string& m) { return throwError(env, "imgclass_onednn.createNetwork: " + m); };
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc != 3) return fail("expected 3 arguments");
  napi_typedarray_type type;
  size_t nInts = 0, nShape = 0;
  void *opsData = nullptr, *shapeData = nullptr;
  if (napi_get_typedarray_info(env, argv[0], &type, &nInts, &opsData, nullptr, nullptr) != napi_ok || type != napi_int32_array ||
      nInts == 0 || nInts % kNetOpInts != 0) {
    return fail("ops must be a non-empty Int32Array of 16 integers per op");
  }
  if (napi_get_typedarray_info(env, argv[2], &type, &nShape, &shapeData, nullptr, nullptr) != napi_ok || type != napi_int32_array || nShape != 3) {
    return fail("input must be an Int32Array [height, width, channels]");
  }
  uint32_t nWeights = 0;
  if (napi_get_array_length(env, argv[1], &nWeights) != napi_ok) return fail("weights must be an array of Float32Array");
  auto net = std::make_unique<Network>();
  const int32_t* shape = static_cast<const int32_t*>(shapeData);
  net->h = shape[0];
  net->w = shape[1];
  net->c = shape[2];
  if (net->h < 1 || net->w < 1 || net->c < 1) return fail("input dimensions must be positive");
  const int count = int(nInts / kNetOpInts);
  uint32_t nextWeight = 0;
  auto takeWeights = [&](std::vector<float>& out, size_t want, const char* what, int i) -> bool {
    napi_value a;
    float* d = nullptr;
    size_t len = 0;
    if (nextWeight >= nWeights || napi_get_element(env, argv[1], nextWeight++, &a) != napi_ok || !floatArray(env, a, &d, &len)) {
      fail("op " + std::to_string(i) + ": missing its " + what + " Float32Array");
      return false;
    }
    if (len != want) {
      fail("op " + std::to_string(i) + ": " + what + " holds " + std::to_string(len) + " values, expected " + std::to_string(want));
      return false;
    }
    out.assign(d, d + len);
    return true;
  };
  try {
    for (int i = 0; i < count; i++) {
      NetOp op;
      std::memcpy(op.p, static_cast<const int32_t*>(opsData) + size_t(i) * kNetOpInts, sizeof op.p);
      const int32_t* p = op.p;
      const std::string where = "op " + std::to_string(i) + ": ";
      if (p[1] < -1 || p[1] >= i || p[2] < -1 || p[2] >= i) return fail(where + "reads an op that does not come before it");
      if (p[1] < 0) {
        op.c = net->c, op.h = net->h, op.w = net->w;
      } else {
        const NetOp& in = net->ops[size_t(p[1])];
        op.c = in.oc, op.h = in.oh, op.w = in.ow;
      }
      if (p[0] == kNetConv) {
        if (op.h == 0) return fail(where + "a convolution needs feature maps, not vectors");
        const int64_t ekh = int64_t(p[5] - 1) * p[13] + 1, ekw = int64_t(p[6] - 1) * p[14] + 1;
        if (p[4] < 1 || p[5] < 1 || p[6] < 1 || p[7] < 1 || p[8] < 1 || p[13] < 1 || p[14] < 1 ||
            std::min({p[9], p[10], p[11], p[12]}) < 0) {
          return fail(where + "bad convolution geometry");
        }
        op.oc = p[4];
        op.oh = (op.h + p[9] + p[11] - ekh) / p[7] + 1;
        op.ow = (op.w + p[10] + p[12] - ekw) / p[8] + 1;
        if (op.h + p[9] + p[11] < ekh || op.w + p[10] + p[12] < ekw) return fail(where + "the kernel is larger than the padded input");
        if (!takeWeights(op.weights, size_t(p[5]) * p[6] * op.c * op.oc, "kernel", i) || !takeWeights(op.bias, size_t(op.oc), "bias", i)) return nullptr;
        op.userWeights = memory::desc({op.oc, op.c, p[5], p[6]}, dt::f32, tag::hwio);
      } else if (p[0] == kNetMaxPool) {
        if (op.h == 0 || p[5] < 1 || p[6] < 1 || p[7] < 1 || p[8] < 1 || std::min({p[9], p[10], p[11], p[12]}) < 0) {
          return fail(where + "bad max pool geometry");
        }
        op.oc = op.c;
        op.oh = (op.h + p[9] + p[11] - p[5]) / p[7] + 1;
        op.ow = (op.w + p[10] + p[12] - p[6]) / p[8] + 1;
        if (op.oh < 1 || op.ow < 1) return fail(where + "the pool window is larger than the padded input");
      } else if (p[0] == kNetAvgPool) {
        if (op.h == 0) return fail(where + "global average pooling needs feature maps");
        op.oc = op.c, op.oh = 1, op.ow = 1;
      } else if (p[0] == kNetDense) {
        if (p[4] < 1) return fail(where + "a dense layer needs units >= 1");
        if (op.h > 1 || op.w > 1) return fail(where + "a dense layer reads a vector (global average pool first)");
        op.oc = p[4], op.oh = 0, op.ow = 0;
        if (!takeWeights(op.weights, size_t(op.c) * op.oc, "kernel", i) || !takeWeights(op.bias, size_t(op.oc), "bias", i)) return nullptr;
        // tfjs's [in, units] is oneDNN's "io" (and hwio with 1x1 maps).
        op.userWeights = op.h == 0 ? memory::desc({op.oc, op.c}, dt::f32, tag::io) : memory::desc({op.oc, op.c, 1, 1}, dt::f32, tag::hwio);
      } else {
        return fail(where + "unknown op type " + std::to_string(p[0]));
      }
      if (p[2] >= 0) {
        const NetOp& r = net->ops[size_t(p[2])];
        if (p[0] != kNetConv || r.oc != op.oc || r.oh != op.oh || r.ow != op.ow) return fail(where + "a residual must match a convolution's output shape");
      }
      if ((p[0] == kNetConv || p[0] == kNetDense)) {
        op.biasMem = memory(memory::desc({op.oc}, dt::f32, tag::x), net->eng, op.bias.data());
      }
      net->ops.push_back(std::move(op));
    }
    if (nextWeight != nWeights) return fail("more weight arrays than the ops use");
    if (net->ops.back().p[0] != kNetDense) return fail("the last op must be a dense layer (the logits)");
    net->classes = net->ops.back().oc;
  } catch (const dnnl::error& e) {
    return fail(std::string("oneDNN: ") + e.what());
  }
  napi_value out;
  Network* raw = net.release();
  if (napi_create_external(env, raw, finalizeNetwork, nullptr, &out) != napi_ok) {
    delete raw;
    return fail("cannot create the network object");
  }
  return out;
}

// networkForward(net, images: Float32Array (n x h x w x c, NHWC), n) -> Float32Array logits (n x classes)
napi_value NetworkForward(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  auto fail = [&](const std::string& m) { return throwError(env, "imgclass_onednn.networkForward: " + m); };
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc != 3) return fail("expected 3 arguments");
  Network* net = networkArg(env, argv[0]);
  if (!net) return fail("not a network");
  if (net->disposed) return fail("the network was disposed");
  float* images = nullptr;
  size_t len = 0;
  int64_t n = 0;
  if (!floatArray(env, argv[1], &images, &len) || !getInt(env, argv[2], &n) || n < 1) return fail("expected (network, Float32Array, n >= 1)");
  if (len != size_t(n) * net->h * net->w * net->c) {
    return fail("images hold " + std::to_string(len) + " values, expected " + std::to_string(n) + " x " +
                std::to_string(net->h) + " x " + std::to_string(net->w) + " x " + std::to_string(net->c));
  }
  napi_value buffer, result;
  void* outData = nullptr;
  const size_t outCount = size_t(n) * net->classes;
  if (napi_create_arraybuffer(env, outCount * 4, &outData, &buffer) != napi_ok ||
      napi_create_typedarray(env, napi_float32_array, outCount, buffer, 0, &result) != napi_ok) {
    return fail("cannot allocate the logits");
  }
  try {
    // A batch runs as chunks of power-of-two sizes (37 = 32 + 4 + 1): a server sees every batch size up
    // to its maximum, and primitives for each would cost JIT time and memory for little gain.
    std::unordered_map<int, memory> args;
    for (int64_t done = 0; done < n;) {
      memory::dim chunk = 1;
      while (chunk * 2 <= n - done) chunk *= 2;
      auto it = net->execs.find(chunk);
      if (it == net->execs.end()) it = net->execs.emplace(chunk, planNetwork(*net, chunk)).first;
      Exec& ex = *it->second;
      if (net->slots.size() < ex.slotBytes.size()) net->slots.resize(ex.slotBytes.size());
      std::vector<void*> ptr(ex.slotBytes.size());
      for (size_t s = 0; s < ptr.size(); s++) ptr[s] = aligned(net->slots[s], ex.slotBytes[s]);
      float* in = images + size_t(done) * net->h * net->w * net->c;
      float* out = static_cast<float*>(outData) + size_t(done) * net->classes;
      for (Step& step : ex.steps) {
        args.clear();
        for (StepArg& a : step.args) {
          if (a.slot >= 0) a.mem.set_data_handle(ptr[size_t(a.slot)]);
          else if (a.slot == kImages) a.mem.set_data_handle(in);
          else if (a.slot == kLogits) a.mem.set_data_handle(out);
          args.emplace(a.id, a.mem);
        }
        step.prim.execute(net->strm, args);
      }
      net->strm.wait();
      done += chunk;
    }
  } catch (const dnnl::error& e) {
    return fail(std::string("oneDNN: ") + e.what() + " (status " + std::to_string(int(e.status)) + ")");
  }
  return result;
}

// disposeNetwork(net): frees its weights, primitives and buffers now rather than at garbage collection.
napi_value DisposeNetwork(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  Network* net = nullptr;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc != 1 || !(net = networkArg(env, argv[0]))) {
    return throwError(env, "imgclass_onednn.disposeNetwork: expected a network");
  }
  net->execs.clear();
  net->ops.clear();
  net->slots.clear();
  net->disposed = true;
  return nullptr;
}

napi_value SetThreads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t n = 0;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc != 1 ||
      !getInt(env, argv[0], &n) || n < 1) {
    return throwError(env, "imgclass_onednn.setThreads: expected a positive integer");
  }
  // OpenMP's thread count is per calling thread: each replica worker sets its own.
  omp_set_num_threads(int(n));
  return nullptr;
}

napi_value Info(napi_env env, napi_callback_info) {
  const dnnl_version_t* ver = dnnl_version();
  const char* isa = "unknown";
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: isa = "sse41"; break;
    case dnnl::cpu_isa::avx: isa = "avx"; break;
    case dnnl::cpu_isa::avx2: isa = "avx2"; break;
    case dnnl::cpu_isa::avx512_core: isa = "avx512_core"; break;
    case dnnl::cpu_isa::avx512_core_vnni: isa = "avx512_core_vnni"; break;
    case dnnl::cpu_isa::avx512_core_bf16: isa = "avx512_core_bf16"; break;
    case dnnl::cpu_isa::avx512_core_amx: isa = "avx512_core_amx"; break;
    default: break;
  }
  std::string s = std::to_string(ver->major) + "." + std::to_string(ver->minor) + "." + std::to_string(ver->patch);
  napi_value obj, version, isaV, threads;
  napi_create_object(env, &obj);
  napi_create_string_utf8(env, s.c_str(), NAPI_AUTO_LENGTH, &version);
  napi_create_string_utf8(env, isa, NAPI_AUTO_LENGTH, &isaV);
  napi_create_int32(env, omp_get_max_threads(), &threads);
  napi_set_named_property(env, obj, "version", version);
  napi_set_named_property(env, obj, "isa", isaV);
  napi_set_named_property(env, obj, "threads", threads);
  return obj;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"conv", nullptr, Conv, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"maxPoolGrad", nullptr, MaxPoolGrad, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"reduceRows", nullptr, ReduceRows, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"weightedSum", nullptr, WeightedSum, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"momentumUpdate", nullptr, MomentumUpdate, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"bnForward", nullptr, BnForward, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"bnBackward", nullptr, BnBackward, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"sumSquares", nullptr, SumSquares, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"createNetwork", nullptr, CreateNetwork, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"networkForward", nullptr, NetworkForward, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"disposeNetwork", nullptr, DisposeNetwork, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setThreads", nullptr, SetThreads, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"info", nullptr, Info, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

}  // namespace

void registerTrainNetwork(napi_env env, napi_value exports);  // train-network.cc

NAPI_MODULE_INIT() {
  registerTrainNetwork(env, exports);
  return Init(env, exports);
}
