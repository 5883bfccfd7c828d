import pytest

from hatch.models.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny_pasta"), seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    from hatch.models.loading import load_model_and_processor

    return load_model_and_processor(tiny_dir)
