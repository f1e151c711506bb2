import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def random_model(tmp_path_factory):
    from helpers import make_random_model

    root = tmp_path_factory.mktemp("weights")
    make_random_model(root / "random_c2f", bias_foreground=0.0)
    return root


@pytest.fixture
def one_torch_thread():
    """Small convolutions on a shared 2-core CPU run far faster on one torch thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
