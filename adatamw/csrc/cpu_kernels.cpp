// CPU kernels of AdaTAMW's fused path (arXiv 2412.18790): one read of m and g for the three
// sums of Eq. 2, and one pass over p, g, m, v for the update of Eq. 7 / Eq. 8 with AdamW's
// decoupled weight decay. float32, contiguous tensors; adatamw/cpu_kernels.py checks that.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

// (<m, g>, |m|^2, |g|^2) of one tensor pair, accumulated in double (16 lanes, so it vectorises).
torch::Tensor torque_sums(const torch::Tensor& m, const torch::Tensor& g) {
  const float* mp = m.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  const int64_t n = m.numel();
  constexpr int64_t kGrain = 1 << 15;
  const int64_t chunks = std::max<int64_t>((n + kGrain - 1) / kGrain, 1);
  std::vector<double> part(3 * chunks, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t b = c * kGrain, e = std::min(n, b + kGrain);
      constexpr int kLanes = 16;
      double dl[kLanes] = {0}, ml[kLanes] = {0}, gl[kLanes] = {0};
      int64_t i = b;
      for (; i + kLanes <= e; i += kLanes) {
        for (int k = 0; k < kLanes; ++k) {
          const double mi = mp[i + k], gi = gp[i + k];
          dl[k] += mi * gi;
          ml[k] += mi * mi;
          gl[k] += gi * gi;
        }
      }
      double d = 0, mm = 0, gg = 0;
      for (; i < e; ++i) {
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
      part[3 * c] = d;
      part[3 * c + 1] = mm;
      part[3 * c + 2] = gg;
    }
  });
  double s[3] = {0, 0, 0};
  for (int64_t c = 0; c < chunks; ++c)
    for (int k = 0; k < 3; ++k) s[k] += part[3 * c + k];
  return torch::tensor({s[0], s[1], s[2]}, torch::kFloat64);
}

// m <- a m + c g;  v <- beta2 v + (1 - beta2) g^2;  p <- p - lr wd p;
// p <- p - lr m / (sqrt(v) / sqrt(1 - beta2^t) + eps).   ("tam": a = beta1, "ema": a = 1 - c.)
void adatamw_update(torch::Tensor p, const torch::Tensor& g, torch::Tensor m, torch::Tensor v,
                    double lr, double weight_decay, double a, double c, double beta2,
                    double inv_bias_correction2_sqrt, double eps) {
  float* pp = p.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  float* mp = m.data_ptr<float>();
  float* vp = v.data_ptr<float>();
  const float f_lr = lr, f_decay = lr * weight_decay, f_a = a, f_c = c, f_b2 = beta2,
              f_1mb2 = 1.0 - beta2, f_ibc = inv_bias_correction2_sqrt, f_eps = eps;
  at::parallel_for(0, p.numel(), 1 << 14, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      const float gi = gp[i];
      const float mi = f_a * mp[i] + f_c * gi;
      const float vi = f_b2 * vp[i] + f_1mb2 * gi * gi;
      float pi = pp[i];
      pi -= f_decay * pi;
      pi -= f_lr * mi / (std::sqrt(vi) * f_ibc + f_eps);
      mp[i] = mi;
      vp[i] = vi;
      pp[i] = pi;
    }
  });
}

// The same over lists, in one call from Python: a [N, 3] float64 tensor of sums.
torch::Tensor torque_sums_list(const std::vector<torch::Tensor>& ms,
                               const std::vector<torch::Tensor>& gs) {
  auto out = torch::empty({static_cast<int64_t>(ms.size()), 3}, torch::kFloat64);
  auto acc = out.accessor<double, 2>();
  for (size_t i = 0; i < ms.size(); ++i) {
    auto row = torque_sums(ms[i], gs[i]);
    auto r = row.accessor<double, 1>();
    for (int k = 0; k < 3; ++k) acc[i][k] = r[k];
  }
  return out;
}

// adatamw_update over lists; a, c and the inverse bias corrections per tensor.
void adatamw_update_list(std::vector<torch::Tensor> ps, const std::vector<torch::Tensor>& gs,
                         std::vector<torch::Tensor> ms, std::vector<torch::Tensor> vs, double lr,
                         double weight_decay, const std::vector<double>& a,
                         const std::vector<double>& c, double beta2,
                         const std::vector<double>& inv_bias_correction2_sqrt, double eps) {
  for (size_t i = 0; i < ps.size(); ++i)
    adatamw_update(ps[i], gs[i], ms[i], vs[i], lr, weight_decay, a[i], c[i], beta2,
                   inv_bias_correction2_sqrt[i], eps);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("torque_sums", &torque_sums, "<m,g>, |m|^2, |g|^2 (float64) of float32 tensors");
  module.def("torque_sums_list", &torque_sums_list, "torque_sums of each pair: [N, 3] float64");
  module.def("adatamw_update", &adatamw_update, "AdaTAMW update of one float32 tensor");
  module.def("adatamw_update_list", &adatamw_update_list, "adatamw_update of each tensor");
}
