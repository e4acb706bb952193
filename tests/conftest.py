"""Shared fixtures: real models, loaded once per test session.

Tests never reach a model hub: HF_HUB_OFFLINE is set before anything imports transformers.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One torch thread for the whole suite.

    The test machines have two cores; small forward passes gain little from a second
    OpenMP thread, and two threads competing with any other process (a notebook kernel, a
    browser, another job) were measured 10-20x slower here than one.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def smol():
    """The default embedded model (SmolLM2-135M-Instruct) as a TransformerBridge."""
    import workbench as wb

    return wb.load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def tiny():
    """The shipped tiny reasoner as a TransformerBridge (skipped until it is trained)."""
    import workbench as wb
    from workbench.models import list_models

    info = {m.name: m for m in list_models()}["tiny-reasoner"]
    if not info.available:
        pytest.skip("the tiny reasoner checkpoint is not in workbench/tiny/checkpoint yet")
    return wb.load_model("tiny-reasoner", device="cpu")
