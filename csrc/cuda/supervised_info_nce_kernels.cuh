// CUDA kernels of supervised_info_nce (torch-free: compiled by nvcc through
// supervised_info_nce.cu and on the CPU by the CUDA emulation). Math:
// diva_ext/math/supervised_info_nce.h.
//
// The passes over the [B, K] inner products are info_nce's tile kernel (info_nce_kernels.cuh) with
// the labels set in its arguments: kNceLogits also adds up each row's positives (sum of s and
// count, per split, in the same epilogue as the online (max, sum)); kNceGradQ / kNceGradQueue
// subtract w_i / T at the positives. The per-row kernels here merge the splits (in split order),
// finish the rows and combine the gradients.
#pragma once

#include <cstdint>

#include "diva_ext/math/supervised_info_nce.h"
#include "info_nce_kernels.cuh"

namespace diva_ext::cuda {

// One block per row: merges the splits' (max, sum, sigma, count) in split order, writes loss,
// lse, the stats (info_nce's layout, DaNCE columns 0), positives and O.
template <typename T, typename Acc>
__global__ void __launch_bounds__(kNceFinishThreads) supervised_info_nce_finish_kernel(
    gmem<const Acc> part_m, gmem<const Acc> part_l, gmem<const Acc> part_sigma,
    gmem<const std::int64_t> part_count, gmem<const Acc> part_o, long long splits, long long rows,
    long long d, Acc inv_t, gmem<Acc> stats, gmem<T> loss_out, gmem<T> lse_out,
    gmem<std::int64_t> positives, gmem<Acc> o) {
  __shared__ Acc o_scale_s;
  const long long r = blockIdx.x;
  if (threadIdx.x == 0) {
    Acc m = nce_neg_inf<Acc>(), l = Acc(0), sa, sb, sigma = Acc(0);
    std::int64_t n = 0;
    for (long long s = 0; s < splits; ++s) {
      math::merge_max_sum<NceDeviceMath>(m, l, part_m[s * rows + r], part_l[s * rows + r], sa, sb);
      sigma += part_sigma[s * rows + r];
      n += part_count[s * rows + r];
    }
    Acc loss, lse, lse_lo, o_scale;
    math::supervised_finish_row<NceDeviceMath>(m, l, sigma, n, inv_t, loss, lse, lse_lo, o_scale);
    const long long base = r * math::kNceStatsColumns;
    stats[base + math::kStatLse] = lse;
    stats[base + math::kStatLoss] = loss;
    stats[base + math::kStatLseLo] = lse_lo;
    math::store_dance_row(stats, r, math::DanceRow<Acc>{Acc(0), Acc(0), Acc(0)});
    loss_out[r] = from_acc<T>(loss);
    lse_out[r] = from_acc<T>(lse);
    positives[r] = n;
    o_scale_s = o_scale;
  }
  __syncthreads();
  if (o) merge_split_o<Acc>(part_m, part_l, part_o, splits, rows, d, r, o_scale_s, o);
}

// Per row: factor = (g + h) / T (h / T without positives) and positive = w / T
// (math::supervised_grad_factors).
template <typename T, typename Acc>
__global__ void supervised_info_nce_grad_rows_kernel(gmem<const T> grad_loss, gmem<const T> grad_lse,
                                                     gmem<const std::int64_t> positives, long long rows,
                                                     Acc inv_t, gmem<Acc> factor, gmem<Acc> positive) {
  const long long r = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  Acc a, w;
  math::supervised_grad_factors(to_acc<Acc>(grad_loss[r]), to_acc<Acc>(grad_lse[r]), positives[r], a, w);
  factor[r] = a * inv_t;
  positive[r] = w * inv_t;
}

// grad_q = factor O - g / T mbar (o = [O; mbar], [2, rows, d]) or the splits' recomputed parts
// summed in split order.
template <typename T, typename Acc>
__global__ void supervised_info_nce_grad_finish_kernel(gmem<const T> grad_loss,
                                                       gmem<const std::int64_t> positives,
                                                       gmem<const Acc> o, gmem<const Acc> part_q,
                                                       long long splits, gmem<const Acc> factor,
                                                       long long rows, long long d, Acc inv_t,
                                                       gmem<T> grad_q) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * d) return;
  const long long r = i / d;
  Acc g = Acc(0);
  if (o) {
    const Acc c = positives[r] > 0 ? to_acc<Acc>(grad_loss[r]) * inv_t : Acc(0);
    g = factor[r] * o[i] - c * o[rows * d + i];
  } else {
    for (long long s = 0; s < splits; ++s) g += part_q[s * rows * d + i];
  }
  grad_q[i] = from_acc<T>(g);
}

// Buffers of the forward pass (contiguous): q [b, d], labels [b], memory [k, d], memory_labels
// [k]; stats [b, kNceStatsColumns]; loss, lse [b]; positives [b]; o [b, d] (O; the caller adds
// the mean positive rows) or null; part_m, part_l, part_sigma, part_count [plan.splits, b];
// part_o [plan.splits, b, d] when o; plan = plan_info_nce(b, k, num_sms, false) (k > 0;
// plan.splits = 0 when k = 0). Requires b >= 1.
template <typename T, typename Acc>
void launch_supervised_info_nce_forward(
    gmem<const T> q, gmem<const std::int64_t> labels, gmem<const T> memory,
    gmem<const std::int64_t> memory_labels, long long b, long long k, long long d,
    double temperature, const NcePlan& plan, gmem<Acc> part_m, gmem<Acc> part_l,
    gmem<Acc> part_sigma, gmem<std::int64_t> part_count, gmem<Acc> part_o, gmem<Acc> stats,
    gmem<T> loss, gmem<T> lse, gmem<std::int64_t> positives, gmem<Acc> o, cudaStream_t stream) {
  const Acc inv_t = static_cast<Acc>(1.0 / temperature);
  if (k > 0) {
    NceTileArgs<T, Acc> args{q, memory, b, k, d, plan.tiles_per_split, inv_t, math::DanceParams<Acc>{},
                             stats, nullptr, part_m, part_l, nullptr, nullptr, part_o,
                             static_cast<bool>(o), labels, memory_labels, part_sigma, part_count};
    launch_info_nce_tiles<T, Acc, kNceLogits>(args, false, plan, stream);
  }
  DIVA_LAUNCH((supervised_info_nce_finish_kernel<T, Acc>), dim3(static_cast<unsigned>(b)),
              dim3(kNceFinishThreads), 0, stream)(part_m, part_l, part_sigma, part_count, part_o,
                                                  k > 0 ? plan.splits : 0, b, d, inv_t, stats,
                                                  loss, lse, positives, o);
}

// Buffers of the backward pass: grad_loss, grad_lse [b]; stats [b, kNceStatsColumns] and
// positives [b] (from the forward); o [2, b, d] or null; factor, positive [b]; grad_q [b, d] or
// null; grad_memory_acc [k, d] (Acc) or null. When grad_q and not o and k > 0: part_q
// [plan_q.splits, b, d], plan_q = plan_info_nce(b, k, num_sms, false). Requires b, d >= 1.
template <typename T, typename Acc>
void launch_supervised_info_nce_backward(
    gmem<const T> grad_loss, gmem<const T> grad_lse, gmem<const T> q,
    gmem<const std::int64_t> labels, gmem<const T> memory, gmem<const std::int64_t> memory_labels,
    long long b, long long k, long long d, double temperature, gmem<const Acc> stats,
    gmem<const std::int64_t> positives, gmem<const Acc> o, const NcePlan& plan_q,
    gmem<Acc> part_q, gmem<Acc> factor, gmem<Acc> positive, gmem<T> grad_q,
    gmem<Acc> grad_memory_acc, cudaStream_t stream) {
  const Acc inv_t = static_cast<Acc>(1.0 / temperature);
  DIVA_LAUNCH((supervised_info_nce_grad_rows_kernel<T, Acc>), nce_blocks(b, 256), dim3(256), 0,
              stream)(grad_loss, grad_lse, positives, b, inv_t, factor, positive);
  const bool recompute_q = grad_q && !o && k > 0;
  if (recompute_q) {
    NceTileArgs<T, Acc> args{q, memory, b, k, d, plan_q.tiles_per_split, inv_t, math::DanceParams<Acc>{},
                             stats, factor, nullptr, nullptr, nullptr, nullptr, part_q, true,
                             labels, memory_labels, nullptr, nullptr, positive};
    launch_info_nce_tiles<T, Acc, kNceGradQ>(args, false, plan_q, stream);
  }
  if (grad_q) {
    DIVA_LAUNCH((supervised_info_nce_grad_finish_kernel<T, Acc>), nce_blocks(b * d, 256), dim3(256),
                0, stream)(grad_loss, positives, o, part_q, recompute_q ? plan_q.splits : 0, factor,
                           b, d, inv_t, grad_q);
  }
  if (grad_memory_acc && k > 0) {
    const NcePlan plan = plan_info_nce(k, b, 1, /*single_split=*/true);
    NceTileArgs<T, Acc> args{memory, q, k, b, d, plan.tiles_per_split, inv_t, math::DanceParams<Acc>{},
                             stats, factor, nullptr, nullptr, nullptr, nullptr, grad_memory_acc, true,
                             memory_labels, labels, nullptr, nullptr, positive};
    launch_info_nce_tiles<T, Acc, kNceGradQueue>(args, false, plan, stream);
  }
}

}  // namespace diva_ext::cuda
