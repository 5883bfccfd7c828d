"""The PaStA objective on a collated batch: the compiled loss on the model's cell embeddings, and the
auxiliary term of the SFT / GRPO stages."""
import pytest
import torch

from hatch_vlm.pasta.config import PastaConfig
from hatch_vlm.pasta.data import PastaCollator, make_samples
from hatch_vlm.pasta.objective import pasta_aux_loss, pasta_loss


def test_aux_loss(tiny):
    model, processor = tiny
    config = PastaConfig(model_dir="", output_dir="")
    batch = PastaCollator(processor)(make_samples(config, 2, seed=5))
    # The stage's loss is the compiled op, equal to the naive reference on the model's cell embeddings.
    import hatch_ext
    from hatch_vlm.pasta import loss as loss_module
    from hatch_vlm.pasta.cells import cell_embeddings_from_pixels

    assert loss_module.patch_align is hatch_ext.ops.patch_align
    with torch.no_grad():
        emb = cell_embeddings_from_pixels(model, batch["pixel_values"], batch["image_grid_thw"], 2, 4)
        # float64 reference: a float32 naive reprojection flips a few boundary pixels.
        ref = hatch_ext.reference.patch_align(emb.double(), batch["depth"].double(), batch["K"],
                                              batch["cam_to_world"], 4)
        torch.testing.assert_close(pasta_loss(model, batch).double(), ref, rtol=1e-5, atol=1e-6)
    zero = pasta_aux_loss(model, batch, 0.0)
    assert zero.item() == 0 and not zero.requires_grad
    model.zero_grad()
    aux = pasta_aux_loss(model, batch, 0.5)
    torch.testing.assert_close(aux, 0.5 * pasta_loss(model, batch))
    aux.backward()
    with_grad = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert with_grad and all(".visual." in n for n in with_grad)
    model.zero_grad()
    with pytest.raises(KeyError, match="depth"):
        pasta_aux_loss(model, {k: v for k, v in batch.items() if k != "depth"}, 1.0)
    with pytest.raises(ValueError, match="weight"):
        pasta_aux_loss(model, batch, -1.0)
