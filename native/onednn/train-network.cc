// A whole ResNet training step (forward, softmax cross-entropy, backward) in one native call.
//
// Why: on the op-by-op path tfjs hands oneDNN one convolution at a time, reordering its input and
// output between NHWC and oneDNN's channel-blocked layout around every call, and runs batch norm,
// ReLU, the residual adds and the pools as separate passes over the wasm heap; a training step of
// ResNet-18 at 64 px then takes ~1.2x PyTorch's time on the same cores. Here the JavaScript side
// (lib/engine/native-train.ts) hands over the layer graph once; every activation and every gradient
// stays in the layout oneDNN's primitives pick (nChw16c on AVX-512) for the whole step, batch norm
// fuses its ReLU (fuse_norm_relu, with the workspace its backward needs), the residual add fuses the
// ReLU after it, and the only reorders left are the images in, the weights in and the weight gradients
// out. The weights are read where tfjs keeps them (the wasm heap, at offsets given on every call, since
// tfjs may move them between steps); gradients go into the caller's flat Float32Array at the offsets
// the training replica already uses, so the optimizer, checkpoints and exports are unchanged. Batch
// norm's new moving averages go to a Float32Array the caller writes back into its variables.
//
// Arithmetic: activations and convolutions in float32 (or bfloat16 with float32 accumulation when the
// network is created with bf16 = 1: `--precision bfloat16`); weights, their gradients, batch-norm
// statistics and the loss are always float32.
#include <node_api.h>
#include <omp.h>

#include <dnnl.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace imgclass_train {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

// An op is 16 integers: type, a (the op whose output it reads, -1 = the images), b (an add's second
// input, else -1), relu (a batch norm or add followed by ReLU), then for a conv
//   co kh kw sh sw padT padL padB padR dh dw, for a max pool  - kh kw sh sw padT padL padB padR,
//   for a dense layer  units.
// Four tensor references per op (indices into the tensor table, -1 none):
//   conv: kernel (HWIO), bias;  batch norm: gamma, beta, moving mean, moving variance;  dense: kernel [in, units], bias.
// Two floats per op: a batch norm's epsilon and 1 - momentum (tfjs-layers': moving = moving - (moving - batch) x (1 - momentum),
// with 1 - momentum rounded to float32 from double as tfjs does, so the caller computes it).
// The tensor table holds 4 integers per tensor: float count, offset in the gradient array (-1: not
// trained), offset in the statistics array (-1: not a moving statistic), decayed (1: in the L2 term).
enum OpType { kConv = 0, kBn = 1, kRelu = 2, kAdd = 3, kMaxPool = 4, kAvgPool = 5, kDense = 6 };
constexpr int kOpInts = 16, kRefs = 4;

struct Op {
  int32_t p[kOpInts];
  int32_t r[kRefs];
  float eps = 0, keep = 0;  // keep = 1 - momentum
  memory::dim c = 0, h = 0, w = 0, oc = 0, oh = 0, ow = 0;  // per image; dense output oh = ow = 0
  int readers = 0;
};

struct Tensor {
  int32_t count, grad, stat, decayed;
};

// Where a primitive argument's memory comes from at run time.
enum Bind { kOwned = 0, kHeap = 1, kGrad = 2, kImages = 3 };
struct Arg {
  int id;
  memory mem;
  Bind bind;
  int tensor;  // kHeap / kGrad: tensor index
};
struct Ctx {
  char* heap;
  const double* offsets;
  float* grad;
  float* stats;
  const float* images;
  const int32_t* labels;
  double crossEntropy = 0, sumSquares = 0;
  float labelSmoothing = 0;
};
struct Step {
  dnnl::primitive prim;
  std::vector<Arg> args;
  std::function<void(Ctx&)> run;  // a step of our own (loss, statistics) instead of a primitive
  std::string label;              // for errors: which op and pass
};

const char* kTypeNames[] = {"conv", "batch norm", "relu", "add", "max pool", "average pool", "dense"};

struct Value {
  memory::desc desc;
  memory mem;       // the forward value
  memory diff;      // d loss / d value, once something has contributed
  memory tmp;       // a later contribution, before it is added into diff
  int contributions = 0;
};

struct Exec {
  std::vector<Step> steps;
};

struct TrainNet {
  static constexpr uint32_t kMagic = 0x74726e31;
  uint32_t magic = kMagic;
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  memory::dim h = 0, w = 0, c = 0, classes = 0;
  bool bf16 = false;
  std::vector<Op> ops;
  std::vector<Tensor> tensors;
  std::map<memory::dim, std::unique_ptr<Exec>> execs;
  bool disposed = false;
};

napi_value throwError(napi_env env, const std::string& msg) {
  napi_throw_error(env, nullptr, msg.c_str());
  return nullptr;
}

template <typename T>
bool typedArray(napi_env env, napi_value v, napi_typedarray_type want, T** data, size_t* length) {
  napi_typedarray_type type;
  void* p = nullptr;
  if (napi_get_typedarray_info(env, v, &type, length, &p, nullptr, nullptr) != napi_ok || type != want) return false;
  *data = static_cast<T*>(p);
  return true;
}

dnnl::primitive_attr reluAttr(bool relu) {
  dnnl::primitive_attr attr;
  if (relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  return attr;
}

// Plans the whole step for batch size n: forward, loss, backward, in the order they run.
std::unique_ptr<Exec> plan(TrainNet& net, memory::dim n) {
  auto ex = std::make_unique<Exec>();
  const dnnl::engine& eng = net.eng;
  const dt adt = net.bf16 ? dt::bf16 : dt::f32;
  const int count = int(net.ops.size());
  std::vector<Value> values(static_cast<size_t>(count));
  auto& steps = ex->steps;
  const auto train = dnnl::prop_kind::forward_training;
  const auto direct = dnnl::algorithm::convolution_direct;
  auto heapArg = [&](int id, const memory::desc& d, int tensor) { return Arg{id, memory(d, eng, DNNL_MEMORY_NONE), kHeap, tensor}; };
  auto gradArg = [&](int id, const memory::desc& d, int tensor) { return Arg{id, memory(d, eng, DNNL_MEMORY_NONE), kGrad, tensor}; };
  auto owned = [&](int id, const memory& m) { return Arg{id, m, kOwned, -1}; };
  auto reorderStep = [&](Arg from, Arg to) {
    Step s;
    s.prim = dnnl::reorder(dnnl::reorder::primitive_desc(eng, from.mem.get_desc(), eng, to.mem.get_desc()));
    from.id = DNNL_ARG_FROM;
    to.id = DNNL_ARG_TO;
    s.args = {from, to};
    steps.push_back(std::move(s));
  };
  // A weight from the heap (float32, tfjs's layout `user`) in the layout (and type) a primitive wants.
  // Reordered once per step and layout: the backward passes often want the forward's layout again.
  std::vector<std::pair<int, memory>> packed;
  auto weightsIn = [&](int tensor, const memory::desc& user, const memory::desc& want) -> Arg {
    if (want == user) return heapArg(DNNL_ARG_WEIGHTS, user, tensor);
    for (auto& pw : packed) {
      if (pw.first == tensor && pw.second.get_desc() == want) return owned(DNNL_ARG_WEIGHTS, pw.second);
    }
    memory m(want, eng);
    reorderStep(heapArg(0, user, tensor), owned(0, m));
    packed.emplace_back(tensor, m);
    return owned(DNNL_ARG_WEIGHTS, m);
  };
  // A weight gradient from a primitive's layout into the gradient array (tfjs's layout).
  auto gradOut = [&](int id, int tensor, const memory::desc& user, const memory::desc& got, std::vector<Step>& after) -> Arg {
    if (got == user) return gradArg(id, user, tensor);
    memory m(got, eng);
    Step s;
    s.prim = dnnl::reorder(dnnl::reorder::primitive_desc(eng, got, eng, user));
    s.args = {owned(DNNL_ARG_FROM, m), gradArg(DNNL_ARG_TO, user, tensor)};
    after.push_back(std::move(s));
    return owned(id, m);
  };
  // Where a contribution to d loss / d value v goes: straight into its diff (the first), or a
  // temporary added into it afterwards (`accumulate` set).
  auto contribution = [&](int v, bool* accumulate) -> memory {
    Value& val = values[size_t(v)];
    if (val.contributions++ == 0) {
      if (!val.diff) val.diff = memory(val.desc, eng);
      *accumulate = false;
      return val.diff;
    }
    if (!val.tmp) val.tmp = memory(val.desc, eng);
    *accumulate = true;
    return val.tmp;
  };
  auto accumulateStep = [&](int v, const memory& addend) {
    Value& val = values[size_t(v)];
    auto pd = dnnl::binary::primitive_desc(dnnl::binary::desc(dnnl::algorithm::binary_add, val.desc, addend.get_desc(), val.desc), eng);
    Step s;
    s.prim = dnnl::binary(pd);
    s.args = {owned(DNNL_ARG_SRC_0, val.diff), owned(DNNL_ARG_SRC_1, addend), owned(DNNL_ARG_DST, val.diff)};
    steps.push_back(std::move(s));
  };

  size_t labelled = 0;
  auto labelSteps = [&](const std::string& label) {
    for (; labelled < steps.size(); labelled++) steps[labelled].label = label;
  };
  // Forward state the backward pass reads, per op.
  struct Fwd {
    dnnl::convolution_forward::primitive_desc conv;
    memory convSrc;  // the images in the convolution's layout (stem)
    dnnl::batch_normalization_forward::primitive_desc bn;
    memory mean, variance, workspace;
    dnnl::pooling_forward::primitive_desc pool;
    dnnl::eltwise_forward::primitive_desc relu;
    dnnl::inner_product_forward::primitive_desc dense;
  };
  std::vector<Fwd> fwd(static_cast<size_t>(count));
  const memory::desc images({n, net.c, net.h, net.w}, dt::f32, tag::nhwc);

  // Weight decay's sum of squares, read from the heap before anything changes.
  std::vector<int> decayed;
  for (size_t t = 0; t < net.tensors.size(); t++) {
    if (net.tensors[t].decayed) decayed.push_back(int(t));
  }
  {
    Step s;
    const std::vector<Tensor>* tensors = &net.tensors;
    s.run = [decayed, tensors](Ctx& ctx) {
      // Fixed chunks summed in a fixed order: the same bits whatever the thread count or schedule, so
      // that a run resumed from a checkpoint reports the same losses as one that never stopped.
      constexpr int64_t kChunk = 1 << 16;
      double total = 0;
      std::vector<double> part;
      for (int t : decayed) {
        const float* x = reinterpret_cast<const float*>(ctx.heap + size_t(ctx.offsets[t]));
        const int64_t len = (*tensors)[size_t(t)].count, chunks = (len + kChunk - 1) / kChunk;
        part.assign(size_t(chunks), 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
        for (int64_t k = 0; k < chunks; k++) {
          double acc = 0;
          for (int64_t j = k * kChunk, end = std::min(len, j + kChunk); j < end; j++) acc += double(x[j]) * double(x[j]);
          part[size_t(k)] = acc;
        }
        for (double v : part) total += v;
      }
      ctx.sumSquares = total;
    };
    steps.push_back(std::move(s));
  }

  for (int i = 0; i < count; i++) {
    Op& op = net.ops[size_t(i)];
    const int32_t* p = op.p;
    Fwd& f = fwd[size_t(i)];
    Value& out = values[size_t(i)];
    const memory::desc src = p[1] >= 0 ? values[size_t(p[1])].desc : images;
    Arg srcArg = p[1] >= 0 ? owned(DNNL_ARG_SRC, values[size_t(p[1])].mem) : Arg{DNNL_ARG_SRC, memory(images, eng, DNNL_MEMORY_NONE), kImages, -1};
    Step s;
    if (p[0] == kConv) {
      const memory::dims strides = {p[7], p[8]}, dil = {p[13] - 1, p[14] - 1}, padl = {p[9], p[10]}, padr = {p[11], p[12]};
      // The images come as float32 NHWC: the convolution picks its layout, and they are reordered into it.
      const memory::desc want = p[1] >= 0 ? src : memory::desc({n, op.c, op.h, op.w}, adt, tag::any);
      const memory::desc anyW({op.oc, op.c, p[5], p[6]}, adt, tag::any), anyDst({n, op.oc, op.oh, op.ow}, adt, tag::any),
          bias({op.oc}, dt::f32, tag::x);
      auto d = op.r[1] >= 0 ? dnnl::convolution_forward::desc(train, direct, want, anyW, bias, anyDst, strides, dil, padl, padr)
                            : dnnl::convolution_forward::desc(train, direct, want, anyW, anyDst, strides, dil, padl, padr);
      f.conv = dnnl::convolution_forward::primitive_desc(d, eng);
      if (p[1] < 0) {
        f.convSrc = memory(f.conv.src_desc(), eng);
        reorderStep(srcArg, owned(0, f.convSrc));
        srcArg = owned(DNNL_ARG_SRC, f.convSrc);
      }
      s.prim = dnnl::convolution_forward(f.conv);
      s.args.push_back(srcArg);
      s.args.push_back(weightsIn(op.r[0], memory::desc({op.oc, op.c, p[5], p[6]}, dt::f32, tag::hwio), f.conv.weights_desc()));
      if (op.r[1] >= 0) s.args.push_back(heapArg(DNNL_ARG_BIAS, bias, op.r[1]));
      out.desc = f.conv.dst_desc();
    } else if (p[0] == kBn) {
      auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
      if (p[3]) flags |= dnnl::normalization_flags::fuse_norm_relu;
      f.bn = dnnl::batch_normalization_forward::primitive_desc(dnnl::batch_normalization_forward::desc(train, src, op.eps, flags), eng);
      f.mean = memory(f.bn.mean_desc(), eng);
      f.variance = memory(f.bn.variance_desc(), eng);
      const memory::desc cvec({op.c}, dt::f32, tag::x);
      s.prim = dnnl::batch_normalization_forward(f.bn);
      s.args = {srcArg, heapArg(DNNL_ARG_SCALE, cvec, op.r[0]), heapArg(DNNL_ARG_SHIFT, cvec, op.r[1]),
                owned(DNNL_ARG_MEAN, f.mean), owned(DNNL_ARG_VARIANCE, f.variance)};
      if (p[3]) {
        f.workspace = memory(f.bn.workspace_desc(), eng);
        s.args.push_back(owned(DNNL_ARG_WORKSPACE, f.workspace));
      }
      out.desc = f.bn.dst_desc();
    } else if (p[0] == kRelu) {
      f.relu = dnnl::eltwise_forward::primitive_desc(
          dnnl::eltwise_forward::desc(train, dnnl::algorithm::eltwise_relu_use_dst_for_bwd, src, 0.f, 0.f), eng);
      s.prim = dnnl::eltwise_forward(f.relu);
      s.args = {srcArg};
      out.desc = f.relu.dst_desc();
    } else if (p[0] == kAdd) {
      const memory::desc other = values[size_t(p[2])].desc;
      auto pd = dnnl::binary::primitive_desc(dnnl::binary::desc(dnnl::algorithm::binary_add, src, other, src), reluAttr(p[3] != 0), eng);
      s.prim = dnnl::binary(pd);
      srcArg.id = DNNL_ARG_SRC_0;
      s.args = {srcArg, owned(DNNL_ARG_SRC_1, values[size_t(p[2])].mem)};
      out.desc = pd.dst_desc();
    } else if (p[0] == kMaxPool || p[0] == kAvgPool) {
      const bool max = p[0] == kMaxPool;
      const memory::dims strides = max ? memory::dims{p[7], p[8]} : memory::dims{1, 1},
                         kernel = max ? memory::dims{p[5], p[6]} : memory::dims{op.h, op.w},
                         padl = max ? memory::dims{p[9], p[10]} : memory::dims{0, 0},
                         padr = max ? memory::dims{p[11], p[12]} : memory::dims{0, 0};
      const memory::desc anyDst({n, op.oc, max ? op.oh : 1, max ? op.ow : 1}, adt, tag::any);
      f.pool = dnnl::pooling_forward::primitive_desc(
          dnnl::pooling_forward::desc(train, max ? dnnl::algorithm::pooling_max : dnnl::algorithm::pooling_avg_exclude_padding, src, anyDst,
                                      strides, kernel, padl, padr), eng);
      s.prim = dnnl::pooling_forward(f.pool);
      s.args = {srcArg};
      if (max) {
        f.workspace = memory(f.pool.workspace_desc(), eng);
        s.args.push_back(owned(DNNL_ARG_WORKSPACE, f.workspace));
      }
      out.desc = f.pool.dst_desc();
    } else {  // dense: logits in float32 [n, units]
      const memory::desc anyW({op.oc, op.c, 1, 1}, adt, tag::any), bias({op.oc}, dt::f32, tag::x), logits({n, op.oc}, dt::f32, tag::nc);
      f.dense = dnnl::inner_product_forward::primitive_desc(dnnl::inner_product_forward::desc(train, src, anyW, bias, logits), eng);
      s.prim = dnnl::inner_product_forward(f.dense);
      s.args = {srcArg, weightsIn(op.r[0], memory::desc({op.oc, op.c, 1, 1}, dt::f32, tag::hwio), f.dense.weights_desc()),
                heapArg(DNNL_ARG_BIAS, bias, op.r[1])};
      out.desc = f.dense.dst_desc();
    }
    out.mem = memory(out.desc, eng);
    s.args.push_back(owned(DNNL_ARG_DST, out.mem));
    steps.push_back(std::move(s));
    labelSteps("op " + std::to_string(i) + " (" + kTypeNames[p[0]] + ") forward");

    if (p[0] == kBn && op.r[2] >= 0 && op.r[3] >= 0) {
      // The moving averages, as tfjs-layers' doMovingAverage: v - (v - batch) x (1 - momentum).
      Step st;
      const int mt = op.r[2], vt = op.r[3], ms = net.tensors[size_t(mt)].stat, vs = net.tensors[size_t(vt)].stat;
      const memory mean = f.mean, variance = f.variance;
      const float keep = op.keep;
      const int64_t channels = op.c;
      st.run = [=](Ctx& ctx) {
        const float* bm = static_cast<const float*>(mean.get_data_handle());
        const float* bv = static_cast<const float*>(variance.get_data_handle());
        const float* om = reinterpret_cast<const float*>(ctx.heap + size_t(ctx.offsets[mt]));
        const float* ov = reinterpret_cast<const float*>(ctx.heap + size_t(ctx.offsets[vt]));
        for (int64_t k = 0; k < channels; k++) {
          ctx.stats[ms + k] = om[k] - (om[k] - bm[k]) * keep;
          ctx.stats[vs + k] = ov[k] - (ov[k] - bv[k]) * keep;
        }
      };
      steps.push_back(std::move(st));
    }
  }

  // Softmax cross-entropy with label smoothing, mean over the batch (tf.losses.softmaxCrossEntropy),
  // and its gradient with respect to the logits.
  const int last = count - 1;
  const memory::dim classes = net.classes;
  memory logits = values[size_t(last)].mem;
  memory dlogits32({{n, classes}, dt::f32, tag::nc}, eng);
  {
    Step s;
    s.run = [=](Ctx& ctx) {
      const float* z = static_cast<const float*>(logits.get_data_handle());
      float* g = static_cast<float*>(dlogits32.get_data_handle());
      double total = 0;
      const double ls = ctx.labelSmoothing;
      for (memory::dim r = 0; r < n; r++) {
        const float* zr = z + r * classes;
        float* gr = g + r * classes;
        double mx = zr[0];
        for (memory::dim k = 1; k < classes; k++) mx = std::max(mx, double(zr[k]));
        double sum = 0;
        for (memory::dim k = 0; k < classes; k++) sum += std::exp(double(zr[k]) - mx);
        const double logSum = std::log(sum) + mx;
        const int32_t label = ctx.labels[r];
        for (memory::dim k = 0; k < classes; k++) {
          const double target = (k == label ? 1.0 - ls : 0.0) + ls / double(classes);
          const double logp = double(zr[k]) - logSum;
          total -= target * logp;
          gr[k] = float((std::exp(logp) - target) / double(n));
        }
      }
      ctx.crossEntropy = total / double(n);
    };
    steps.push_back(std::move(s));
  }
  values[size_t(last)].diff = dlogits32;
  values[size_t(last)].contributions = 1;
  if (net.bf16) {
    values[size_t(last)].diff = memory({{n, classes}, dt::bf16, tag::nc}, eng);
    reorderStep(owned(0, dlogits32), owned(0, values[size_t(last)].diff));
  }

  // Backward, last op first: when an op is reached, every reader of its output has contributed.
  std::vector<Step> after;
  for (int i = last; i >= 0; i--) {
    Op& op = net.ops[size_t(i)];
    const int32_t* p = op.p;
    Fwd& f = fwd[size_t(i)];
    Value& out = values[size_t(i)];
    if (out.contributions != op.readers + (i == last ? 1 : 0) || !out.diff) {
      throw std::runtime_error("op " + std::to_string(i) + "'s output is not used by the loss");
    }
    const int a = p[1];
    const memory::desc src = a >= 0 ? values[size_t(a)].desc : images;
    after.clear();
    bool acc = false;
    if (p[0] == kConv) {
      const memory::dims strides = {p[7], p[8]}, dil = {p[13] - 1, p[14] - 1}, padl = {p[9], p[10]}, padr = {p[11], p[12]};
      const memory::desc userW({op.oc, op.c, p[5], p[6]}, dt::f32, tag::hwio), anyW32({op.oc, op.c, p[5], p[6]}, dt::f32, tag::any),
          bias({op.oc}, dt::f32, tag::x);
      const memory::desc convSrc = f.conv.src_desc();
      auto wd = op.r[1] >= 0
                    ? dnnl::convolution_backward_weights::desc(direct, convSrc, anyW32, bias, out.desc, strides, dil, padl, padr)
                    : dnnl::convolution_backward_weights::desc(direct, convSrc, anyW32, out.desc, strides, dil, padl, padr);
      auto wpd = dnnl::convolution_backward_weights::primitive_desc(wd, eng, f.conv);
      Step s;
      s.prim = dnnl::convolution_backward_weights(wpd);
      s.args = {owned(DNNL_ARG_SRC, a >= 0 ? values[size_t(a)].mem : f.convSrc), owned(DNNL_ARG_DIFF_DST, out.diff),
                gradOut(DNNL_ARG_DIFF_WEIGHTS, op.r[0], userW, wpd.diff_weights_desc(), after)};
      if (op.r[1] >= 0) s.args.push_back(gradArg(DNNL_ARG_DIFF_BIAS, bias, op.r[1]));
      steps.push_back(std::move(s));
      for (Step& st : after) steps.push_back(std::move(st));
      if (a >= 0) {  // the images need no gradient
        const memory::desc anyW({op.oc, op.c, p[5], p[6]}, adt, tag::any);
        auto dpd = dnnl::convolution_backward_data::primitive_desc(
            dnnl::convolution_backward_data::desc(direct, src, anyW, out.desc, strides, dil, padl, padr), eng, f.conv);
        Step d;
        d.prim = dnnl::convolution_backward_data(dpd);
        d.args = {owned(DNNL_ARG_DIFF_DST, out.diff), weightsIn(op.r[0], userW, dpd.weights_desc())};
        d.args.push_back(owned(DNNL_ARG_DIFF_SRC, contribution(a, &acc)));
        steps.push_back(std::move(d));
        if (acc) accumulateStep(a, values[size_t(a)].tmp);
      }
    } else if (p[0] == kBn) {
      auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
      if (p[3]) flags |= dnnl::normalization_flags::fuse_norm_relu;
      auto bpd = dnnl::batch_normalization_backward::primitive_desc(
          dnnl::batch_normalization_backward::desc(dnnl::prop_kind::backward, out.desc, src, op.eps, flags), eng, f.bn);
      const memory::desc cvec({op.c}, dt::f32, tag::x);
      Step s;
      s.prim = dnnl::batch_normalization_backward(bpd);
      s.args = {owned(DNNL_ARG_SRC, values[size_t(a)].mem), owned(DNNL_ARG_MEAN, f.mean), owned(DNNL_ARG_VARIANCE, f.variance),
                owned(DNNL_ARG_DIFF_DST, out.diff), heapArg(DNNL_ARG_SCALE, cvec, op.r[0]), heapArg(DNNL_ARG_SHIFT, cvec, op.r[1]),
                gradArg(DNNL_ARG_DIFF_SCALE, cvec, op.r[0]), gradArg(DNNL_ARG_DIFF_SHIFT, cvec, op.r[1])};
      if (p[3]) s.args.push_back(owned(DNNL_ARG_WORKSPACE, f.workspace));
      s.args.push_back(owned(DNNL_ARG_DIFF_SRC, contribution(a, &acc)));
      steps.push_back(std::move(s));
      if (acc) accumulateStep(a, values[size_t(a)].tmp);
    } else if (p[0] == kRelu) {
      auto bpd = dnnl::eltwise_backward::primitive_desc(
          dnnl::eltwise_backward::desc(dnnl::algorithm::eltwise_relu_use_dst_for_bwd, out.desc, out.desc, 0.f, 0.f), eng, f.relu);
      Step s;
      s.prim = dnnl::eltwise_backward(bpd);
      s.args = {owned(DNNL_ARG_DST, out.mem), owned(DNNL_ARG_DIFF_DST, out.diff), owned(DNNL_ARG_DIFF_SRC, contribution(a, &acc))};
      steps.push_back(std::move(s));
      if (acc) accumulateStep(a, values[size_t(a)].tmp);
    } else if (p[0] == kAdd) {
      memory g = out.diff;
      if (p[3]) {
        auto fh = dnnl::eltwise_forward::primitive_desc(
            dnnl::eltwise_forward::desc(train, dnnl::algorithm::eltwise_relu_use_dst_for_bwd, out.desc, 0.f, 0.f), eng);
        auto bpd = dnnl::eltwise_backward::primitive_desc(
            dnnl::eltwise_backward::desc(dnnl::algorithm::eltwise_relu_use_dst_for_bwd, out.desc, out.desc, 0.f, 0.f), eng, fh);
        g = memory(out.desc, eng);
        Step s;
        s.prim = dnnl::eltwise_backward(bpd);
        s.args = {owned(DNNL_ARG_DST, out.mem), owned(DNNL_ARG_DIFF_DST, out.diff), owned(DNNL_ARG_DIFF_SRC, g)};
        steps.push_back(std::move(s));
      }
      // d(a + b) passes unchanged to both: an input read by the add alone shares the buffer.
      for (int v : {p[1], p[2]}) {
        Value& in = values[size_t(v)];
        if (net.ops[size_t(v)].readers == 1 && in.desc == out.desc) {
          in.diff = g;
          in.contributions = 1;
          continue;
        }
        memory t = contribution(v, &acc);
        if (acc) {
          accumulateStep(v, g);
        } else {
          reorderStep(owned(0, g), owned(0, t));
        }
      }
    } else if (p[0] == kMaxPool || p[0] == kAvgPool) {
      const bool max = p[0] == kMaxPool;
      const memory::dims strides = max ? memory::dims{p[7], p[8]} : memory::dims{1, 1},
                         kernel = max ? memory::dims{p[5], p[6]} : memory::dims{op.h, op.w},
                         padl = max ? memory::dims{p[9], p[10]} : memory::dims{0, 0},
                         padr = max ? memory::dims{p[11], p[12]} : memory::dims{0, 0};
      auto bpd = dnnl::pooling_backward::primitive_desc(
          dnnl::pooling_backward::desc(max ? dnnl::algorithm::pooling_max : dnnl::algorithm::pooling_avg_exclude_padding, src, out.desc,
                                       strides, kernel, padl, padr), eng, f.pool);
      Step s;
      s.prim = dnnl::pooling_backward(bpd);
      s.args = {owned(DNNL_ARG_DIFF_DST, out.diff)};
      if (max) s.args.push_back(owned(DNNL_ARG_WORKSPACE, f.workspace));
      s.args.push_back(owned(DNNL_ARG_DIFF_SRC, contribution(a, &acc)));
      steps.push_back(std::move(s));
      if (acc) accumulateStep(a, values[size_t(a)].tmp);
    } else {
      const memory::desc userW({op.oc, op.c, 1, 1}, dt::f32, tag::hwio), anyW32({op.oc, op.c, 1, 1}, dt::f32, tag::any),
          bias({op.oc}, dt::f32, tag::x);
      auto wpd = dnnl::inner_product_backward_weights::primitive_desc(
          dnnl::inner_product_backward_weights::desc(src, anyW32, bias, out.diff.get_desc()), eng, f.dense);
      Step s;
      s.prim = dnnl::inner_product_backward_weights(wpd);
      s.args = {owned(DNNL_ARG_SRC, values[size_t(a)].mem), owned(DNNL_ARG_DIFF_DST, out.diff),
                gradOut(DNNL_ARG_DIFF_WEIGHTS, op.r[0], userW, wpd.diff_weights_desc(), after), gradArg(DNNL_ARG_DIFF_BIAS, bias, op.r[1])};
      steps.push_back(std::move(s));
      for (Step& st : after) steps.push_back(std::move(st));
      const memory::desc anyW({op.oc, op.c, 1, 1}, adt, tag::any);
      auto dpd = dnnl::inner_product_backward_data::primitive_desc(
          dnnl::inner_product_backward_data::desc(src, anyW, out.diff.get_desc()), eng, f.dense);
      Step d;
      d.prim = dnnl::inner_product_backward_data(dpd);
      d.args = {owned(DNNL_ARG_DIFF_DST, out.diff), weightsIn(op.r[0], userW, dpd.weights_desc())};
      d.args.push_back(owned(DNNL_ARG_DIFF_SRC, contribution(a, &acc)));
      steps.push_back(std::move(d));
      if (acc) accumulateStep(a, values[size_t(a)].tmp);
    }
    labelSteps("op " + std::to_string(i) + " (" + kTypeNames[p[0]] + ") backward");
  }
  // Every argument as its primitive expects it: a mismatch found here names the step, where oneDNN's
  // own check at execution says only "invalid arguments".
  for (const Step& st : steps) {
    if (st.run) continue;
    const_dnnl_primitive_desc_t pd = st.prim.get_primitive_desc();
    for (const Arg& a : st.args) {
      const dnnl_memory_desc_t* want = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, 0 + a.id);
      const memory::desc have = a.mem.get_desc();
      if (!want || !dnnl_memory_desc_equal(want, &have.data)) {
        throw std::runtime_error("argument " + std::to_string(a.id) + " of " + st.label + " does not have the layout the primitive expects");
      }
    }
  }
  return ex;
}

void finalize(napi_env, void* data, void*) { delete static_cast<TrainNet*>(data); }

TrainNet* netArg(napi_env env, napi_value v) {
  napi_valuetype t;
  void* data = nullptr;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, &data) != napi_ok) return nullptr;
  TrainNet* net = static_cast<TrainNet*>(data);
  return net && net->magic == TrainNet::kMagic ? net : nullptr;
}

// createTrainNetwork(ops: Int32Array(16 x count), refs: Int32Array(4 x count), floats: Float32Array(2 x count),
//                    tensors: Int32Array(4 x T), input: Int32Array [h, w, c], bf16: boolean) -> external
// Checks the graph and the shapes; primitives are made at the first step of each batch size.
napi_value Create(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  auto fail = [&](const std::string& m) { return throwError(env, "imgclass_onednn.createTrainNetwork: " + m); };
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc != 6) return fail("expected 6 arguments");
  int32_t *ops = nullptr, *refs = nullptr, *tensors = nullptr, *shape = nullptr;
  float* floats = nullptr;
  size_t nOps = 0, nRefs = 0, nFloats = 0, nTensors = 0, nShape = 0;
  bool bf16 = false;
  if (!typedArray(env, argv[0], napi_int32_array, &ops, &nOps) || nOps == 0 || nOps % kOpInts != 0) return fail("ops must be 16 integers per op");
  const size_t count = nOps / kOpInts;
  if (!typedArray(env, argv[1], napi_int32_array, &refs, &nRefs) || nRefs != count * kRefs) return fail("refs must be 4 integers per op");
  if (!typedArray(env, argv[2], napi_float32_array, &floats, &nFloats) || nFloats != count * 2) return fail("floats must be 2 per op");
  if (!typedArray(env, argv[3], napi_int32_array, &tensors, &nTensors) || nTensors % 4 != 0) return fail("tensors must be 4 integers per tensor");
  if (!typedArray(env, argv[4], napi_int32_array, &shape, &nShape) || nShape != 3) return fail("input must be [height, width, channels]");
  if (napi_get_value_bool(env, argv[5], &bf16) != napi_ok) return fail("bf16 must be a boolean");
  auto net = std::make_unique<TrainNet>();
  net->bf16 = bf16;
  net->h = shape[0], net->w = shape[1], net->c = shape[2];
  if (net->h < 1 || net->w < 1 || net->c < 1) return fail("input dimensions must be positive");
  for (size_t t = 0; t < nTensors / 4; t++) {
    Tensor x{tensors[4 * t], tensors[4 * t + 1], tensors[4 * t + 2], tensors[4 * t + 3]};
    if (x.count < 1) return fail("tensor " + std::to_string(t) + " is empty");
    net->tensors.push_back(x);
  }
  const int T = int(net->tensors.size());
  for (size_t i = 0; i < count; i++) {
    Op op;
    std::memcpy(op.p, ops + i * kOpInts, sizeof op.p);
    std::memcpy(op.r, refs + i * kRefs, sizeof op.r);
    op.eps = floats[2 * i];
    op.keep = floats[2 * i + 1];
    const int32_t* p = op.p;
    const std::string where = "op " + std::to_string(i) + ": ";
    const int ii = int(i);
    if (p[1] < -1 || p[1] >= ii || p[2] < -1 || p[2] >= ii) return fail(where + "reads an op that does not come before it");
    if (p[1] < 0) {
      op.c = net->c, op.h = net->h, op.w = net->w;
    } else {
      const Op& in = net->ops[size_t(p[1])];
      op.c = in.oc, op.h = in.oh, op.w = in.ow;
    }
    auto tensorIs = [&](int ref, int64_t want, bool grad, bool stat) {
      if (ref < 0 || ref >= T) return false;
      const Tensor& x = net->tensors[size_t(ref)];
      return x.count == want && (!grad || x.grad >= 0) && (!stat || x.stat >= 0);
    };
    if (p[1] < 0 && p[0] != kConv) return fail(where + "only a convolution may read the images");
    if (p[0] != kDense && p[1] >= 0 && net->ops[size_t(p[1])].oh == 0) return fail(where + "reads a vector");
    switch (p[0]) {
      case kConv: {
        const int64_t ekh = int64_t(p[5] - 1) * p[13] + 1, ekw = int64_t(p[6] - 1) * p[14] + 1;
        if (p[4] < 1 || p[5] < 1 || p[6] < 1 || p[7] < 1 || p[8] < 1 || p[13] < 1 || p[14] < 1 || std::min({p[9], p[10], p[11], p[12]}) < 0 ||
            op.h + p[9] + p[11] < ekh || op.w + p[10] + p[12] < ekw) {
          return fail(where + "bad convolution geometry");
        }
        op.oc = p[4];
        op.oh = (op.h + p[9] + p[11] - ekh) / p[7] + 1;
        op.ow = (op.w + p[10] + p[12] - ekw) / p[8] + 1;
        if (!tensorIs(op.r[0], int64_t(p[5]) * p[6] * op.c * op.oc, true, false)) return fail(where + "the kernel tensor is missing or of the wrong size");
        if (op.r[1] >= 0 && !tensorIs(op.r[1], op.oc, true, false)) return fail(where + "the bias tensor has the wrong size");
        break;
      }
      case kBn:
        op.oc = op.c, op.oh = op.h, op.ow = op.w;
        if (!tensorIs(op.r[0], op.c, true, false) || !tensorIs(op.r[1], op.c, true, false) || !tensorIs(op.r[2], op.c, false, true) ||
            !tensorIs(op.r[3], op.c, false, true) || !(op.eps > 0) || !(op.keep >= 0 && op.keep <= 1)) {
          return fail(where + "batch norm needs trained gamma and beta, moving mean and variance of its channels, epsilon > 0, momentum in [0, 1]");
        }
        break;
      case kRelu:
        op.oc = op.c, op.oh = op.h, op.ow = op.w;
        break;
      case kAdd: {
        if (p[2] < 0) return fail(where + "an add needs two inputs");
        const Op& b = net->ops[size_t(p[2])];
        if (b.oc != op.c || b.oh != op.h || b.ow != op.w) return fail(where + "adds tensors of different shapes");
        op.oc = op.c, op.oh = op.h, op.ow = op.w;
        break;
      }
      case kMaxPool:
        if (p[5] < 1 || p[6] < 1 || p[7] < 1 || p[8] < 1 || std::min({p[9], p[10], p[11], p[12]}) < 0) return fail(where + "bad max pool geometry");
        op.oc = op.c;
        op.oh = (op.h + p[9] + p[11] - p[5]) / p[7] + 1;
        op.ow = (op.w + p[10] + p[12] - p[6]) / p[8] + 1;
        if (op.oh < 1 || op.ow < 1) return fail(where + "the pool window is larger than the padded input");
        break;
      case kAvgPool:
        op.oc = op.c, op.oh = 1, op.ow = 1;
        break;
      case kDense:
        if (p[1] < 0 || net->ops[size_t(p[1])].p[0] != kAvgPool) return fail(where + "a dense layer must read the global average pool");
        op.oc = p[4], op.oh = 0, op.ow = 0;
        if (op.oc < 1 || !tensorIs(op.r[0], op.c * op.oc, true, false) || !tensorIs(op.r[1], op.oc, true, false)) {
          return fail(where + "the dense kernel or bias is missing or of the wrong size");
        }
        break;
      default:
        return fail(where + "unknown op type " + std::to_string(p[0]));
    }
    if (p[0] != kAdd && p[2] >= 0) return fail(where + "only an add has a second input");
    if (p[3] && p[0] != kBn && p[0] != kAdd) return fail(where + "ReLU is fused only into batch norm and add");
    if (p[1] >= 0) net->ops[size_t(p[1])].readers++;
    if (p[2] >= 0) net->ops[size_t(p[2])].readers++;
    net->ops.push_back(op);
  }
  if (net->ops.back().p[0] != kDense) return fail("the last op must be the dense layer (the logits)");
  for (size_t i = 0; i + 1 < net->ops.size(); i++) {
    if (net->ops[i].readers == 0) return fail("op " + std::to_string(i) + "'s output is read by nothing");
  }
  net->classes = net->ops.back().oc;
  napi_value out;
  TrainNet* raw = net.release();
  if (napi_create_external(env, raw, finalize, nullptr, &out) != napi_ok) {
    delete raw;
    return fail("cannot create the network object");
  }
  return out;
}

// trainNetworkStep(net, heap: ArrayBuffer, offsets: Float64Array(T), images: Float32Array (n x h x w x c),
//                  labels: Int32Array(n), n, grad: Float32Array, stats: Float32Array, labelSmoothing)
//   -> [crossEntropy, sum of squares of the decayed tensors] (before the update)
napi_value StepCall(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  auto fail = [&](const std::string& m) { return throwError(env, "imgclass_onednn.trainNetworkStep: " + m); };
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc != 9) return fail("expected 9 arguments");
  TrainNet* net = netArg(env, argv[0]);
  if (!net) return fail("not a training network");
  if (net->disposed) return fail("the network was disposed");
  void* heap = nullptr;
  size_t heapBytes = 0, nOff = 0, nImages = 0, nLabels = 0, nGrad = 0, nStats = 0;
  double *offsets = nullptr, smoothing = 0;
  float *images = nullptr, *grad = nullptr, *stats = nullptr;
  int32_t* labels = nullptr;
  int64_t n = 0;
  if (napi_get_arraybuffer_info(env, argv[1], &heap, &heapBytes) != napi_ok) return fail("heap must be an ArrayBuffer");
  if (!typedArray(env, argv[2], napi_float64_array, &offsets, &nOff) || nOff != net->tensors.size()) return fail("offsets must be a Float64Array, one per tensor");
  if (!typedArray(env, argv[3], napi_float32_array, &images, &nImages) || !typedArray(env, argv[4], napi_int32_array, &labels, &nLabels) ||
      napi_get_value_int64(env, argv[5], &n) != napi_ok || n < 1 || !typedArray(env, argv[6], napi_float32_array, &grad, &nGrad) ||
      !typedArray(env, argv[7], napi_float32_array, &stats, &nStats) || napi_get_value_double(env, argv[8], &smoothing) != napi_ok) {
    return fail("expected (net, ArrayBuffer, Float64Array, Float32Array, Int32Array, n >= 1, Float32Array, Float32Array, number)");
  }
  if (nImages != size_t(n) * net->h * net->w * net->c || nLabels < size_t(n)) return fail("images or labels do not hold n examples");
  for (int64_t k = 0; k < n; k++) {
    if (labels[k] < 0 || labels[k] >= net->classes) return fail("label " + std::to_string(labels[k]) + " is outside [0, classes)");
  }
  for (size_t t = 0; t < net->tensors.size(); t++) {
    const Tensor& x = net->tensors[t];
    const double off = offsets[t];
    if (!(off >= 0) || off != std::floor(off) || size_t(off) + size_t(x.count) * 4 > heapBytes || size_t(off) % 4 != 0) {
      return fail("tensor " + std::to_string(t) + " lies outside the heap");
    }
    if ((x.grad >= 0 && size_t(x.grad) + size_t(x.count) > nGrad) || (x.stat >= 0 && size_t(x.stat) + size_t(x.count) > nStats)) {
      return fail("tensor " + std::to_string(t) + " does not fit the gradient or statistics array");
    }
  }
  Ctx ctx{static_cast<char*>(heap), offsets, grad, stats, images, labels};
  const std::string* current = nullptr;
  auto where = [&]() { return current ? " in " + *current : std::string(" while planning"); };
  ctx.labelSmoothing = float(smoothing);
  try {
    auto it = net->execs.find(n);
    if (it == net->execs.end()) it = net->execs.emplace(n, plan(*net, n)).first;
    std::unordered_map<int, memory> args;
    for (Step& s : it->second->steps) {
      current = &s.label;
      if (s.run) {
        net->strm.wait();
        s.run(ctx);
        continue;
      }
      args.clear();
      for (Arg& a : s.args) {
        if (a.bind == kHeap) a.mem.set_data_handle(ctx.heap + size_t(offsets[a.tensor]));
        else if (a.bind == kGrad) a.mem.set_data_handle(grad + net->tensors[size_t(a.tensor)].grad);
        else if (a.bind == kImages) a.mem.set_data_handle(const_cast<float*>(images));
        args.emplace(a.id, a.mem);
      }
      s.prim.execute(net->strm, args);
    }
    net->strm.wait();
  } catch (const dnnl::error& e) {
    return fail(std::string("oneDNN: ") + e.what() + " (status " + std::to_string(int(e.status)) + ")" + where());
  } catch (const std::exception& e) {
    return fail(e.what() + where());
  }
  napi_value buffer, result;
  void* data = nullptr;
  if (napi_create_arraybuffer(env, 16, &data, &buffer) != napi_ok || napi_create_typedarray(env, napi_float64_array, 2, buffer, 0, &result) != napi_ok) {
    return fail("cannot allocate the result");
  }
  static_cast<double*>(data)[0] = ctx.crossEntropy;
  static_cast<double*>(data)[1] = ctx.sumSquares;
  return result;
}

napi_value Dispose(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  TrainNet* net = nullptr;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc != 1 || !(net = netArg(env, argv[0]))) {
    return throwError(env, "imgclass_onednn.disposeTrainNetwork: expected a training network");
  }
  net->execs.clear();
  net->disposed = true;
  return nullptr;
}

}  // namespace imgclass_train

void registerTrainNetwork(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"createTrainNetwork", nullptr, imgclass_train::Create, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"trainNetworkStep", nullptr, imgclass_train::StepCall, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"disposeTrainNetwork", nullptr, imgclass_train::Dispose, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
