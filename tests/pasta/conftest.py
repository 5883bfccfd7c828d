import pytest


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    from hatch_vlm.models.loading import load_model_and_processor

    return load_model_and_processor(tiny_dir)
