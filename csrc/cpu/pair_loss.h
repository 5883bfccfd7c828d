// The per-view-pair core of the fused PaStA loss on the CPU, shared by soft_infonce.cpp and patch_align.cpp
// (they differ only in where the symmetric overlap S comes from: a PairOverlapFn below). Math:
// docs/design.md "The PaStA math", the fused form: docs/kernels.md. Implemented in pair_loss.cpp; the
// normalisation is common/normalize.h, the row-tile rule common/loss_tiles.h.
//
// For one sample and one unordered view pair (a, c), a < c, S = ½(M_ac + M_caᵀ) [P, P] serves both
// directions: row (a, c, i) uses row i of S, row (c, a, j) uses column j. One similarity block
// s = ê_a ê_cᵀ / τ_p, formed in row tiles, gives the row log-sum-exp (a → c, complete per tile) and the
// column log-sum-exp (c → a, online across tiles). Because S is sparse, the target of a row is one value
// u for its zero entries plus a few others, so the cross term Σ_j p_ij s_ij needs the block only at the
// nonzeros of S (plus two matrix-vector products). Memory per pair: the tile (tile_rows × P) and the
// nonzeros of S (patch_align: plus its count histograms, P² each); nothing is held for all pairs.
// Pairs run in the rounds of a round-robin schedule (pairs of a round share no view), in parallel
// when a round has enough (sample, pair) tasks: race-free and deterministic.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <tuple>
#include <vector>

namespace hatch::cpu {

// Everything the loss needs from S for one pair (computed in float64).
struct PairTargets {
  int64_t P = 0;
  // Nonzero entries of S in row-major order: entries row_ptr[i] .. row_ptr[i+1]-1 belong to row i,
  // col[k] is their column and w[k] = valid_i (p_ij − u_i) + valid'_j (p'_ji − u'_j): the part of the
  // two targets that differs from the uniform value of the zero entries.
  std::vector<int64_t> row_ptr, col;
  std::vector<double> w;
  // Target of a zero entry of row i (a → c) / column j (c → a); 0 for invalid rows / columns, which
  // then drop out of every sum.
  std::vector<double> u_row, u_col;
  std::vector<uint8_t> valid_row, valid_col;
  int64_t n_valid_rows = 0, n_valid_cols = 0;
};

// One contribution to S: S[i, j] += v. A source lists ½ M_ac[i, j] and ½ M_ca[j, i] for the nonzero
// overlaps of both directions; entries of one (i, j) add up (x + y = y + x exactly, so the sum equals
// ½(M_ac + M_caᵀ) whatever the order).
struct SEntry {
  int32_t i, j;
  double v;
};

// Targets, validity (Σ_j S_ij > min_overlap for row i; Σ_i S_ij > min_overlap for column j) and the
// nonzero structure of S [P, P] given by its entries (any order; reordered in place).
PairTargets pair_targets(std::vector<SEntry>& entries, int64_t P, double tau_t, double min_overlap);

// Forward of one pair. ea, ec: normalised embeddings [P, D] (acc dtype, contiguous). Writes the row
// log-sum-exp of a → c into lse_ac [P] and of c → a into lse_ca [P]; returns the sum of H over the
// pair's valid rows of both directions (float64).
double pair_loss_forward(const at::Tensor& ea, const at::Tensor& ec, const PairTargets& t, double tau_p,
                         const at::Tensor& lse_ac, const at::Tensor& lse_ca);

// Backward of one pair: adds G ê_c to ga and Gᵀ ê_a to gc ([P, D], acc dtype), where
// G_ij = ∂(Σ_valid H)/∂s_ij; the caller applies grad_loss / (τ_p · num_valid).
void pair_loss_backward(const at::Tensor& ea, const at::Tensor& ec, const PairTargets& t, double tau_p,
                        const at::Tensor& lse_ac, const at::Tensor& lse_ca, const at::Tensor& ga,
                        const at::Tensor& gc);

// Appends the entries of S (float64) of sample b and views a < c to `entries` (which comes empty).
using PairOverlapFn = std::function<void(int64_t b, int64_t a, int64_t c, std::vector<SEntry>& entries)>;

// The whole loss from embeddings [B, V, P, D] and a source of S: (loss, row_lse, num_valid) as the
// ops return them. Inputs must be validated by the caller.
std::tuple<at::Tensor, at::Tensor, at::Tensor> loss_forward(const at::Tensor& emb,
                                                            const PairOverlapFn& overlap, double tau_t,
                                                            double tau_p, double min_overlap);

// grad_emb (emb's dtype and shape) of the loss, recomputing S, the targets and the similarity tiles.
at::Tensor loss_backward(const at::Tensor& grad_loss, const at::Tensor& emb, const PairOverlapFn& overlap,
                         const at::Tensor& row_lse, const at::Tensor& num_valid, double tau_t, double tau_p,
                         double min_overlap);

}  // namespace hatch::cpu
