"""Cell embeddings: merged tokens pooled to the n x n grid (docs/design.md), any image size, batches."""
import numpy as np
import pytest
import torch
from PIL import Image

from hatch_vlm.data.record import Sample
from hatch_vlm.pasta.cells import cell_embeddings, pool_tokens


def test_pool_tokens_matches_hand_rule():
    h, w, n, D = 6, 10, 4, 3
    tokens = torch.randn(h * w, D, dtype=torch.float64)
    got = pool_tokens(tokens, h, w, n)
    want = torch.zeros(n * n, D, dtype=torch.float64)
    count = torch.zeros(n * n)
    for r in range(h):
        for c in range(w):
            i = (r * n // h) * n + (c * n // w)    # token (r, c) -> cell (floor(r n/h), floor(c n/w))
            want[i] += tokens[r * w + c]
            count[i] += 1
    assert (count > 0).all()
    torch.testing.assert_close(got, want / count[:, None].double())
    # Rectangular grids, and a grid equal to the token grid is the identity.
    assert pool_tokens(tokens, h, w, 2, 5).shape == (10, D)
    torch.testing.assert_close(pool_tokens(tokens, h, w, h, w), tokens)


def test_pool_tokens_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one merged token"):
        pool_tokens(torch.randn(6, 4), 2, 3, 4)
    with pytest.raises(ValueError, match=r"\[h\*w, D\]"):
        pool_tokens(torch.randn(7, 4), 2, 3, 2)


def _sample(shape, views=2, seed=0):
    rng = np.random.default_rng(seed)
    return Sample(images=[rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(views)])


def _single_image_cells(model, processor, image, n):
    """Independent path: one image through the processor and get_image_features, pooled by hand."""
    out = processor.image_processor(images=[Image.fromarray(image)], return_tensors="pt")
    _, gh, gw = out["image_grid_thw"][0].tolist()
    feats = model.model.get_image_features(out["pixel_values"], out["image_grid_thw"]).pooler_output[0]
    h, w = gh // 2, gw // 2
    grid = feats.reshape(h, w, -1)
    cells = []
    for i in range(n):
        for j in range(n):
            rows = [r for r in range(h) if r * n // h == i]
            cols = [c for c in range(w) if c * n // w == j]
            cells.append(grid[rows][:, cols].reshape(-1, grid.shape[-1]).mean(0))
    return torch.stack(cells)


@pytest.mark.parametrize("views", [2, 3])
def test_cell_embeddings_batch_matches_single_images(tiny, views):
    model, processor = tiny
    # Two samples of different image sizes in one batch: 112x112 (4x4 tokens), 150x200 (-> 140x196, 5x7).
    samples = [_sample((112, 112), views, seed=1), _sample((150, 200), views, seed=2)]
    with torch.no_grad():
        emb = cell_embeddings(model, processor, samples, 4)
        assert emb.shape == (2, views, 16, model.config.text_config.hidden_size)
        for b, s in enumerate(samples):
            for v, img in enumerate(s.images):
                torch.testing.assert_close(emb[b, v], _single_image_cells(model, processor, img, 4),
                                           rtol=1e-4, atol=1e-5)


def test_cell_embeddings_errors(tiny):
    model, processor = tiny
    with pytest.raises(ValueError, match="same number of views"):
        cell_embeddings(model, processor, [_sample((112, 112), 2), _sample((112, 112), 3)], 4)
    with pytest.raises(ValueError, match="at least one merged token"):
        cell_embeddings(model, processor, [_sample((112, 112))], 5)
