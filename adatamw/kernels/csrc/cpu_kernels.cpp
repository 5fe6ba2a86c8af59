// CPU kernels of AdaTAMW's fused path (arXiv 2412.18790), registered as torch.library custom ops
// (adatamw::torque_sums, adatamw::adatamw_update) so torch.compile traces them: one read of m and g
// for the three sums of Eq. 2, and one pass over p, g, m, v for the update of Eq. 7 / Eq. 8 with
// AdamW's decoupled weight decay. The update takes float32 CPU tensors (p, m, v contiguous; a
// non-contiguous gradient is copied); the sums take every floating dtype of CPU tensors, so the
// foreach implementation uses them on CPU too. They mirror adatamw/update.py and
// adatamw/torque.py and are tested against them.
//
// Each call takes every tensor of the step at once: the elements are cut into units of at most
// kUnit elements and the units into one contiguous run per thread with about as many elements
// each, so one parallel region covers the whole step (no fork per tensor). The sums are kept per
// unit and added in unit order: they do not depend on the number of threads.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kUnit = 1 << 15;  // elements per unit: 128 KiB of float32

struct Unit {
  int64_t tensor, begin, end;
};

// The units of `tensors` and, for thread k, the first unit of its run: first[k]..first[k+1].
struct Plan {
  std::vector<Unit> units;
  std::vector<int64_t> first;
};

Plan make_plan(const std::vector<at::Tensor>& tensors) {
  Plan plan;
  int64_t total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t n = tensors[i].numel();
    for (int64_t b = 0; b < n; b += kUnit)
      plan.units.push_back({static_cast<int64_t>(i), b, std::min(n, b + kUnit)});
    total += n;
  }
  const int64_t threads =
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), total / kUnit));
  const int64_t n_units = static_cast<int64_t>(plan.units.size());
  plan.first.assign(threads + 1, n_units);
  plan.first[0] = 0;
  int64_t done = 0, next = 1;
  for (int64_t u = 0; u < n_units; ++u) {
    while (next < threads && done * threads >= next * total) plan.first[next++] = u;
    done += plan.units[u].end - plan.units[u].begin;
  }
  return plan;
}

// body(unit index) for every unit, each thread along its own run.
template <typename Body>
void run(const Plan& plan, const Body& body) {
  const int64_t threads = static_cast<int64_t>(plan.first.size()) - 1;
  at::parallel_for(0, threads, 1, [&](int64_t kb, int64_t ke) {
    for (int64_t k = kb; k < ke; ++k)
      for (int64_t u = plan.first[k]; u < plan.first[k + 1]; ++u) body(u);
  });
}

bool fits(const at::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() &&
         !t.is_sparse();
}

void check_fits(const at::Tensor& t, const char* what) {
  TORCH_CHECK(fits(t), "adatamw cpu kernels take contiguous float32 CPU tensors; got ", what,
              " of dtype ", t.scalar_type(), " on ", t.device(),
              t.is_contiguous() ? "" : " (not contiguous)");
}

void check_scalar(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.numel() == 1 && at::isFloatingType(t.scalar_type()),
              "adatamw cpu kernels: ", what, " must be a one-element floating CPU tensor");
}

// The value of a one-element floating CPU tensor (a step counter or a damping coefficient).
double scalar_value(const at::Tensor& t) {
  return AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "scalar_value",
                                    [&] { return static_cast<double>(*t.data_ptr<scalar_t>()); });
}

// t <- t + 1 for a one-element floating CPU tensor; returns the new value.
double increment(at::Tensor& t) {
  return AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "increment", [&] {
    scalar_t* value = t.data_ptr<scalar_t>();
    *value += 1;
    return static_cast<double>(*value);
  });
}

// Eq. 2's rule for a poisoned momentum: an element of m that is not finite counts as 0 in the
// sums. g is taken as is: a non-finite g makes the sums non-finite and the step's cosine
// undefined (adatamw/torque.py).
template <bool kMask>
inline double finite_or_zero(double x) {
  if constexpr (kMask) return std::fabs(x) <= DBL_MAX ? x : 0.0;
  return x;
}

// (<m, g>, |m|^2, |g|^2) over [begin, end), accumulated in double in 16 lanes (it vectorises);
// with kMask, m's non-finite elements count as 0.
template <bool kMask, typename T>
void unit_sums(const T* mp, const T* gp, int64_t begin, int64_t end, double* out) {
  constexpr int kLanes = 16;
  double dl[kLanes] = {0}, ml[kLanes] = {0}, gl[kLanes] = {0};
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const double mi = finite_or_zero<kMask>(static_cast<double>(mp[i + k]));
      const double gi = static_cast<double>(gp[i + k]);
      dl[k] += mi * gi;
      ml[k] += mi * mi;
      gl[k] += gi * gi;
    }
  }
  double d = 0, mm = 0, gg = 0;
  for (; i < end; ++i) {
    const double mi = finite_or_zero<kMask>(static_cast<double>(mp[i]));
    const double gi = static_cast<double>(gp[i]);
    d += mi * gi;
    mm += mi * mi;
    gg += gi * gi;
  }
  for (int k = 0; k < kLanes; ++k) {
    d += dl[k];
    mm += ml[k];
    gg += gl[k];
  }
  out[0] = d;
  out[1] = mm;
  out[2] = gg;
}

}  // namespace


// Eq. 2's sums (<m~, g>, |m~|^2, |g|^2) of each pair: a [N, 3] float64 tensor. Any floating
// dtype of CPU tensors (float32, float64, bfloat16, float16; one dtype for the whole list; a
// non-contiguous tensor is copied). Accumulated in double, per unit in 16 lanes (so it
// vectorises), then over a tensor's units in order: the result does not depend on the number
// of threads.
at::Tensor torque_sums(at::TensorList ms_in, at::TensorList gs_in) {
  TORCH_CHECK(ms_in.size() == gs_in.size(), "adatamw::torque_sums: ", ms_in.size(),
              " momenta but ", gs_in.size(), " gradients");
  std::vector<at::Tensor> ms, gs;
  const at::ScalarType dtype = ms_in.empty() ? at::kFloat : ms_in[0].scalar_type();
  for (size_t i = 0; i < ms_in.size(); ++i) {
    const at::Tensor& m = ms_in[i];
    const at::Tensor& g = gs_in[i];
    TORCH_CHECK(m.device().is_cpu() && g.device().is_cpu() && !m.is_sparse() && !g.is_sparse() &&
                    at::isFloatingType(dtype) && m.scalar_type() == dtype &&
                    g.scalar_type() == dtype,
                "adatamw::torque_sums takes dense floating CPU tensors of one dtype; got m ",
                m.scalar_type(), " on ", m.device(), " and g ", g.scalar_type(), " on ",
                g.device(), " (the first m: ", dtype, ")");
    TORCH_CHECK(m.numel() == g.numel(), "adatamw::torque_sums: m and g sizes differ");
    ms.push_back(m.contiguous());
    gs.push_back(g.contiguous());
  }
  const Plan plan = make_plan(ms);
  std::vector<double> part(3 * plan.units.size(), 0.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "torque_sums", [&] {
    run(plan, [&](int64_t u) {
      const Unit& unit = plan.units[u];
      const scalar_t* mp = ms[unit.tensor].data_ptr<scalar_t>();
      const scalar_t* gp = gs[unit.tensor].data_ptr<scalar_t>();
      double* out = &part[3 * u];
      unit_sums<false>(mp, gp, unit.begin, unit.end, out);
      // |m|^2 not finite: this unit of m holds a non-finite element; sum it again with the
      // rule (a branch on CPU data, taken only then: finite steps cost what plain sums do)
      if (!std::isfinite(out[1])) unit_sums<true>(mp, gp, unit.begin, unit.end, out);
    });
  });
  auto out = at::zeros({static_cast<int64_t>(ms.size()), 3}, at::kDouble);
  double* acc = out.data_ptr<double>();
  for (size_t u = 0; u < plan.units.size(); ++u)
    for (int k = 0; k < 3; ++k) acc[3 * plan.units[u].tensor + k] += part[3 * u + k];
  return out;
}

// One Adam-family step of each tensor i (adatamw/update.py states the same equations), with
// t = ++steps[i] and c = coefs[i]; kind 0 = "tam", 1 = "ema", 2 = "adam":
//   m <- a m + c g   (tam, Eq. 7: a = beta1;  ema, Eq. 8: a = 1 - c;  adam: a = beta1, c = 1 - beta1)
//   v <- beta2 v + (1 - beta2) g^2;   p <- p - lr wd p;
//   p <- p - (lr / b1) m / (sqrt(v) / sqrt(1 - beta2^t) + eps),  b1 = 1 - beta1^t for adam, else 1;
//   1 - beta^t as -expm1(t log beta).
void adatamw_update(at::TensorList ps, at::TensorList gs_in, at::TensorList ms, at::TensorList vs,
                    at::TensorList steps, at::TensorList coefs, const at::Tensor& lr,
                    double weight_decay, double beta1, double beta2, double eps, int64_t kind) {
  const size_t n = ps.size();
  const bool adam = kind == 2, ema = kind == 1;
  TORCH_CHECK(kind >= 0 && kind <= 2, "adatamw::adatamw_update: kind must be 0, 1 or 2");
  TORCH_CHECK(gs_in.size() == n && ms.size() == n && vs.size() == n && steps.size() == n &&
                  (adam || coefs.size() == n),
              "adatamw::adatamw_update: the lists differ in length");
  check_scalar(lr, "lr");
  std::vector<at::Tensor> gs;
  for (size_t i = 0; i < n; ++i) {  // every check before any step counter moves
    check_fits(ps[i], "a parameter");
    check_fits(ms[i], "exp_avg");
    check_fits(vs[i], "exp_avg_sq");
    gs.push_back(gs_in[i].contiguous());
    check_fits(gs[i], "a gradient");
    const int64_t numel = ps[i].numel();
    TORCH_CHECK(gs[i].numel() == numel && ms[i].numel() == numel && vs[i].numel() == numel,
                "adatamw::adatamw_update: p, g, m, v sizes differ");
    check_scalar(steps[i], "a step counter");
    if (!adam) check_scalar(coefs[i], "a damping coefficient");
  }
  struct Coefs {
    float a, c, inv_bias_correction2_sqrt, step_scale;
  };
  std::vector<Coefs> per_tensor(n);
  const double log_beta1 = beta1 > 0 ? std::log(beta1) : -INFINITY;
  const double log_beta2 = beta2 > 0 ? std::log(beta2) : -INFINITY;
  for (size_t i = 0; i < n; ++i) {
    at::Tensor step = steps[i];
    const double t = increment(step);
    const double c = adam ? 1.0 - beta1 : scalar_value(coefs[i]);
    const double scale = adam ? 1.0 / -std::expm1(t * log_beta1) : 1.0;
    per_tensor[i] = {static_cast<float>(ema ? 1.0 - c : beta1), static_cast<float>(c),
                     static_cast<float>(1.0 / std::sqrt(-std::expm1(t * log_beta2))),
                     static_cast<float>(scale)};
  }
  const double lr_value = scalar_value(lr);
  const float f_lr = lr_value, f_decay = lr_value * weight_decay, f_b2 = beta2,
              f_1mb2 = 1.0 - beta2, f_eps = eps;
  std::vector<at::Tensor> p_list(ps.begin(), ps.end());
  const Plan plan = make_plan(p_list);
  run(plan, [&](int64_t u) {
    const Unit& unit = plan.units[u];
    float* pp = ps[unit.tensor].data_ptr<float>();
    const float* gp = gs[unit.tensor].data_ptr<float>();
    float* mp = ms[unit.tensor].data_ptr<float>();
    float* vp = vs[unit.tensor].data_ptr<float>();
    const Coefs k = per_tensor[unit.tensor];
#pragma omp simd
    for (int64_t i = unit.begin; i < unit.end; ++i) {
      const float gi = gp[i];
      const float mi = k.a * mp[i] + k.c * gi;
      const float vi = f_b2 * vp[i] + f_1mb2 * gi * gi;
      float pi = pp[i];
      pi -= f_decay * pi;
      pi -= f_lr * k.step_scale * mi / (std::sqrt(vi) * k.inv_bias_correction2_sqrt + f_eps);
      mp[i] = mi;
      vp[i] = vi;
      pp[i] = pi;
    }
  });
}

TORCH_LIBRARY(adatamw, m) {
  m.def("torque_sums(Tensor[] momenta, Tensor[] grads) -> Tensor");
  m.def("adatamw_update(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
        "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] steps, Tensor[] coefs, Tensor lr, "
        "float weight_decay, float beta1, float beta2, float eps, int kind) -> ()");
}

TORCH_LIBRARY_IMPL(adatamw, CPU, m) {
  m.impl("torque_sums", &torque_sums);
  m.impl("adatamw_update", &adatamw_update);
}
