// CPU kernels of AdaTAMW's fused path (arXiv 2412.18790): one read of m and g for the three
// sums of Eq. 2, and one pass over p, g, m, v for the update of Eq. 7 / Eq. 8 with AdamW's
// decoupled weight decay. float32, contiguous tensors (fit_mask says which; the kernels check).
//
// Each call takes every tensor of the step at once: the elements are cut into units of at most
// kUnit elements and the units into one contiguous run per thread with about as many elements
// each, so one parallel region covers the whole step (no fork per tensor). The sums are kept per
// unit and added in unit order: they do not depend on the number of threads. (Measured and
// dropped: units taken in turn by the threads, 3-4% slower; walking the update backwards so the
// end of the sums' read is still in cache, no gain; software prefetch; streaming stores.)
#include <torch/extension.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
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

Plan make_plan(const std::vector<torch::Tensor>& tensors) {
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

bool fits(const torch::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous() &&
         !t.is_sparse();
}

void check_fits(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(fits(t), "adatamw cpu kernels take contiguous float32 CPU tensors; got ", what,
              " of dtype ", t.scalar_type(), " on ", t.device(),
              t.is_contiguous() ? "" : " (not contiguous)");
}

void check_scalar(const torch::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.numel() == 1 && at::isFloatingType(t.scalar_type()),
              "adatamw cpu kernels: ", what, " must be a one-element floating CPU tensor");
}

// The value of a one-element floating CPU tensor (a step counter or a damping coefficient).
double scalar_value(const torch::Tensor& t) {
  return AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "scalar_value",
                                    [&] { return static_cast<double>(*t.data_ptr<scalar_t>()); });
}

// t <- t + 1 for a one-element floating CPU tensor; returns the new value.
double increment(torch::Tensor& t) {
  return AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "increment", [&] {
    scalar_t* value = t.data_ptr<scalar_t>();
    *value += 1;
    return static_cast<double>(*value);
  });
}

// (<m, g>, |m|^2, |g|^2) over [begin, end), accumulated in double in 16 lanes (it vectorises).
void unit_sums(const float* mp, const float* gp, int64_t begin, int64_t end, double* out) {
  constexpr int kLanes = 16;
  double dl[kLanes] = {0}, ml[kLanes] = {0}, gl[kLanes] = {0};
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const double mi = mp[i + k], gi = gp[i + k];
      dl[k] += mi * gi;
      ml[k] += mi * mi;
      gl[k] += gi * gi;
    }
  }
  double d = 0, mm = 0, gg = 0;
  for (; i < end; ++i) {
    const double mi = mp[i], gi = gp[i];
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

// Per index i: whether lists[0][i], lists[1][i], ... all are contiguous float32 CPU tensors.
std::vector<bool> fit_mask(const std::vector<std::vector<torch::Tensor>>& lists) {
  const size_t n = lists.empty() ? 0 : lists[0].size();
  std::vector<bool> mask(n, true);
  for (const auto& list : lists) {
    TORCH_CHECK(list.size() == n, "fit_mask: the lists differ in length");
    for (size_t i = 0; i < n; ++i) mask[i] = mask[i] && fits(list[i]);
  }
  return mask;
}

// Eq. 2's sums (<m, g>, |m|^2, |g|^2) of each pair: a [N, 3] float64 tensor. Accumulated in
// double, per unit in 16 lanes (so it vectorises), then over a tensor's units in order: the
// result does not depend on the number of threads.
torch::Tensor torque_sums_list(const std::vector<torch::Tensor>& ms,
                               const std::vector<torch::Tensor>& gs) {
  TORCH_CHECK(ms.size() == gs.size(), "torque_sums_list: ", ms.size(), " momenta but ",
              gs.size(), " gradients");
  for (size_t i = 0; i < ms.size(); ++i) {
    check_fits(ms[i], "a momentum");
    check_fits(gs[i], "a gradient");
    TORCH_CHECK(ms[i].numel() == gs[i].numel(), "torque_sums_list: m and g sizes differ");
  }
  const Plan plan = make_plan(ms);
  std::vector<double> part(3 * plan.units.size(), 0.0);
  run(plan, [&](int64_t u) {
    const Unit& unit = plan.units[u];
    unit_sums(ms[unit.tensor].data_ptr<float>(), gs[unit.tensor].data_ptr<float>(), unit.begin,
              unit.end, &part[3 * u]);
  });
  auto out = torch::zeros({static_cast<int64_t>(ms.size()), 3}, torch::kFloat64);
  double* acc = out.data_ptr<double>();
  for (size_t u = 0; u < plan.units.size(); ++u)
    for (int k = 0; k < 3; ++k) acc[3 * plan.units[u].tensor + k] += part[3 * u + k];
  return out;
}

// Eqs. 2-4 with one cosine over every pair (global scope): S_t from the summed sums (0 when a
// norm is 0, clamped to [-1, 1]); s <- gamma s + (1 - gamma) S_t, written into `s` (a
// one-element float32 tensor); returns c_t = torque_eps + (1 + s_t) / 2 as a 0-d float32 tensor.
torch::Tensor global_damping(const std::vector<torch::Tensor>& ms,
                             const std::vector<torch::Tensor>& gs, torch::Tensor s, double gamma,
                             double torque_eps) {
  TORCH_CHECK(s.device().is_cpu() && s.numel() == 1 && s.scalar_type() == torch::kFloat,
              "global_damping: s must be a one-element float32 CPU tensor");
  const torch::Tensor sums = torque_sums_list(ms, gs);
  const double* row = sums.data_ptr<double>();
  double dot = 0, m_sq = 0, g_sq = 0;
  for (size_t i = 0; i < ms.size(); ++i, row += 3) {
    dot += row[0];
    m_sq += row[1];
    g_sq += row[2];
  }
  const double denom = std::sqrt(m_sq) * std::sqrt(g_sq);
  const double cosine = denom > 0 ? std::clamp(dot / denom, -1.0, 1.0) : 0.0;
  float* s_value = s.data_ptr<float>();
  *s_value = static_cast<float>(gamma * *s_value + (1.0 - gamma) * cosine);
  return torch::scalar_tensor(torque_eps + (1.0 + *s_value) * 0.5, torch::kFloat);
}

// One AdaTAMW step of each tensor i, with t = ++steps[i] and c = coefs[i]:
//   m <- a m + c g   (a = beta1: Eq. 7, "tam";  a = 1 - c: Eq. 8, "ema")
//   v <- beta2 v + (1 - beta2) g^2;   p <- p - lr wd p;
//   p <- p - lr m / (sqrt(v) / sqrt(1 - beta2^t) + eps),  1 - beta2^t as -expm1(t log beta2).
void adatamw_update_list(std::vector<torch::Tensor> ps, const std::vector<torch::Tensor>& gs,
                         std::vector<torch::Tensor> ms, std::vector<torch::Tensor> vs,
                         std::vector<torch::Tensor> steps, const std::vector<torch::Tensor>& coefs,
                         double lr, double weight_decay, double beta1, double beta2, double eps,
                         bool ema) {
  const size_t n = ps.size();
  TORCH_CHECK(gs.size() == n && ms.size() == n && vs.size() == n && steps.size() == n &&
                  coefs.size() == n,
              "adatamw_update_list: the lists differ in length");
  struct Coefs {
    float a, c, inv_bias_correction2_sqrt;
  };
  std::vector<Coefs> per_tensor(n);
  const double log_beta2 = beta2 > 0 ? std::log(beta2) : -INFINITY;
  for (size_t i = 0; i < n; ++i) {  // every check before any step counter moves
    check_fits(ps[i], "a parameter");
    check_fits(gs[i], "a gradient");
    check_fits(ms[i], "exp_avg");
    check_fits(vs[i], "exp_avg_sq");
    const int64_t numel = ps[i].numel();
    TORCH_CHECK(gs[i].numel() == numel && ms[i].numel() == numel && vs[i].numel() == numel,
                "adatamw_update_list: p, g, m, v sizes differ");
    check_scalar(steps[i], "a step counter");
    check_scalar(coefs[i], "a damping coefficient");
  }
  for (size_t i = 0; i < n; ++i) {
    const double t = increment(steps[i]);
    const double c = scalar_value(coefs[i]);
    per_tensor[i] = {static_cast<float>(ema ? 1.0 - c : beta1), static_cast<float>(c),
                     static_cast<float>(1.0 / std::sqrt(-std::expm1(t * log_beta2)))};
  }
  const float f_lr = lr, f_decay = lr * weight_decay, f_b2 = beta2, f_1mb2 = 1.0 - beta2,
              f_eps = eps;
  const Plan plan = make_plan(ps);
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
      pi -= f_lr * mi / (std::sqrt(vi) * k.inv_bias_correction2_sqrt + f_eps);
      mp[i] = mi;
      vp[i] = vi;
      pp[i] = pi;
    }
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("fit_mask", &fit_mask, "per index: all tensors are contiguous float32 on CPU");
  module.def("torque_sums_list", &torque_sums_list,
             "<m,g>, |m|^2, |g|^2 of each pair: [N, 3] float64");
  module.def("global_damping", &global_damping,
             "Eqs. 2-4 over all pairs as one vector: updates s, returns torque_eps + d");
  module.def("adatamw_update_list", &adatamw_update_list,
             "AdaTAMW update of each float32 tensor; increments the step counters");
}
