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


def test_embeddings_through_a_wrapper_keep_an_installed_forward(tiny):
    """Through a wrapper (DDP in real runs; DataParallel on CPU here) the cell embeddings go through the
    wrapper's call, and an instance `forward` someone installed (TRL's GRPOTrainer does) survives."""
    from hatch_vlm.pasta.cells import cell_embeddings_for_training, cell_embeddings_from_pixels
    from hatch_vlm.pasta.config import PastaConfig
    from hatch_vlm.pasta.data import PastaCollator, make_samples

    model, processor = tiny
    batch = PastaCollator(processor)(make_samples(PastaConfig(model_dir="", output_dir=""), 1, seed=3))
    args = (batch["pixel_values"], batch["image_grid_thw"], 2, 4)
    with torch.no_grad():
        direct = cell_embeddings_from_pixels(model, *args, 4)
        installed = lambda *a, **k: "installed"                      # noqa: E731
        model.forward = installed
        try:
            torch.testing.assert_close(cell_embeddings_for_training(torch.nn.DataParallel(model), *args), direct)
            assert model.__dict__.get("forward") is installed
        finally:
            del model.forward
        torch.testing.assert_close(cell_embeddings_for_training(torch.nn.DataParallel(model), *args), direct)
        assert "forward" not in model.__dict__
