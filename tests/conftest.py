"""Every test writes under a temporary PRUNECXR_HOME, never into the checkout."""

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def prunecxr_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("PRUNECXR_HOME", str(home))
    monkeypatch.setenv("PRUNECXR_CACHE", str(home / "cache"))
    return home


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny tensors gain nothing from a second, and on a busy machine it
    mostly waits. Modules of small models use it with ``pytestmark``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
