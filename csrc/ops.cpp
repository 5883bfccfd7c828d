// Op schemas of the `hatch` namespace. Kernels live in cpu/ and cuda/ (one TORCH_LIBRARY_IMPL per
// backend); autograd and fake (meta) implementations are registered from Python (hatch_ext/_registration.py).
// The math every op follows is docs/design.md's "The PaStA math"; shapes use B samples, V views, H×W depth
// pixels, P = grid_h·grid_w cells per view and D embedding channels.
#include <torch/library.h>

TORCH_LIBRARY(hatch, m) {
  // Overlap M [B, V, V, P, P] (depth's dtype): M[b, a, c, i, j] = fraction of the taking-part, valid-depth
  // pixels of cell i of view a that are visible in view c and land in its cell j. Blocks a == c are 0.
  m.def(
      "patch_overlap(Tensor depth, Tensor K, Tensor cam_to_world, int grid_h, int grid_w, "
      "float abs_tol, float rel_tol, int stride) -> Tensor");

  // Block-sparse cosine similarity [B, V, V, P, P] (emb's dtype): cos(e[b, a, i], e[b, c, j]) for a != c;
  // blocks a == c are never computed and hold 0.
  m.def("cell_similarity(Tensor emb) -> Tensor");
  m.def("cell_similarity_backward(Tensor grad, Tensor emb) -> Tensor");

  // Soft-target InfoNCE from embeddings [B, V, P, D] and overlap M [B, V, V, P, P]; the similarity is
  // fused (formed one view pair at a time, never for all pairs at once). Returns
  //   loss      [] (emb's dtype): mean over valid rows of H(p, q) (0 when no row is valid),
  //   row_lse   [B, V, V, P] (float32, float64 for float64 emb): logsumexp_j cos(e_a,i, e_c,j) / tau_p,
  //   num_valid [] (int64): number of valid rows.
  m.def(
      "soft_infonce(Tensor emb, Tensor overlap, float tau_t, float tau_p, float min_overlap) "
      "-> (Tensor loss, Tensor row_lse, Tensor num_valid)");
  m.def(
      "soft_infonce_backward(Tensor grad_loss, Tensor emb, Tensor overlap, Tensor row_lse, "
      "Tensor num_valid, float tau_t, float tau_p, float min_overlap) -> Tensor");

  // The one-call PaStA loss: reprojection, targets and InfoNCE fused. Same outputs as soft_infonce.
  m.def(
      "patch_align(Tensor emb, Tensor depth, Tensor K, Tensor cam_to_world, int grid_h, int grid_w, "
      "float tau_t, float tau_p, float abs_tol, float rel_tol, int stride, float min_overlap) "
      "-> (Tensor loss, Tensor row_lse, Tensor num_valid)");
  m.def(
      "patch_align_backward(Tensor grad_loss, Tensor emb, Tensor depth, Tensor K, Tensor cam_to_world, "
      "Tensor row_lse, Tensor num_valid, int grid_h, int grid_w, float tau_t, float tau_p, "
      "float abs_tol, float rel_tol, int stride, float min_overlap) -> Tensor");
}
