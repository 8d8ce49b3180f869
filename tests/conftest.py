"""Shared fixtures: a real photo shipped by scikit-image, the real MTCNN detector, the tiny pipeline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network; set before the hub is imported

import pytest
import torch
from PIL import Image

from portrait.face import FaceAnalyzer, MTCNNDetector
from portrait.pipeline import PortraitBoothPipeline


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="session")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer(MTCNNDetector())


@pytest.fixture(scope="session")
def tiny_pipe(analyzer) -> PortraitBoothPipeline:
    pipe = PortraitBoothPipeline.from_random_preset("tiny", seed=0)
    pipe.set_progress_bar_config(disable=True)
    pipe.face_analyzer = analyzer
    return pipe


@pytest.fixture(scope="session")
def astronaut_face(tiny_pipe, astronaut):
    return tiny_pipe.encode_faces(astronaut)


@pytest.fixture
def offline(monkeypatch):
    """No host answers: what CI and every machine without a hub connection see."""
    import portrait.loading

    monkeypatch.setattr(portrait.loading, "host_reachable", lambda url, timeout=3.0: False)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: where PyTorch sees none they are skipped, with the reason."""
    if torch.cuda.is_available():
        return
    no_cuda = pytest.mark.skip(reason="needs a CUDA GPU (python -m pytest -m gpu where there is one)")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(no_cuda)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one state per process; each test's training run starts its own, as a new process would."""
    yield
    import sys

    if "accelerate.state" in sys.modules:
        sys.modules["accelerate.state"].AcceleratorState._reset_state(reset_partial_state=True)
