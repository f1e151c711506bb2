"""ONNX Runtime drops a CUDA provider whose libraries do not load and silently runs on the CPU: the engine refuses
that for `--device cuda` and falls back to the CPU, saying so, for `--device auto`."""
from __future__ import annotations

import numpy as np
import pytest

import inference.pipeline as pipeline
from inference.backends import BackendError, OnnxBackend
from inference.model_folder import select_model
from inference.pipeline import EngineOptions, Segmenter
from inference.io import LoadedImage

import SimpleITK as sitk


class _FakeSession:
    """What onnxruntime returns when the CUDA provider failed to load: a session on the CPU provider only."""

    def __init__(self, *args, **kwargs):
        pass

    def get_providers(self):
        return ["CPUExecutionProvider"]


def _fake_ort(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", _FakeSession)


def test_cuda_session_that_fell_back_to_cpu_is_refused(monkeypatch, random_model):
    folder = select_model(random_model, "MRI")
    _fake_ort(monkeypatch)
    with pytest.raises(BackendError, match="could not start its CUDA provider"):
        OnnxBackend(folder.card.fine, "cuda", folder.path / folder.card.fine.files["onnx"])


def test_auto_device_falls_back_to_cpu_with_a_warning(monkeypatch, random_model, capsys):
    import onnxruntime as ort

    real_session = ort.InferenceSession

    def session(path, sess_options=None, providers=None):
        if any((p[0] if isinstance(p, tuple) else p) == "CUDAExecutionProvider" for p in providers):
            return _FakeSession()
        return real_session(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    monkeypatch.setattr(pipeline, "cuda_available", lambda backend: True)
    seg = Segmenter(EngineOptions(weights_dir=random_model, device="auto", backend="onnx"))
    img = sitk.GetImageFromArray(np.random.default_rng(0).normal(100, 20, (20, 40, 40)).astype(np.float32))
    labels = seg.segment(LoadedImage(image=img, array=sitk.GetArrayViewFromImage(img)), "MRI")
    assert labels.shape == (20, 40, 40)
    assert seg._model_for("MRI")[3] == "cpu"
    assert "GPU not usable, running on the CPU" in capsys.readouterr().err
    # an explicit --device cuda is not second-guessed
    with pytest.raises(BackendError):
        Segmenter(EngineOptions(weights_dir=random_model, device="cuda", backend="onnx")).segment(
            LoadedImage(image=img, array=sitk.GetArrayViewFromImage(img)), "MRI")
