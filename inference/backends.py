"""Two backends behind one interface: `predict(x) -> logits` for one patch, with mirror TTA.

* TorchBackend: PlainConvUNet from the card + state_dict; CUDA runs under fp16 autocast, the CPU in fp32.
  Mirror passes stay on the device and only the averaged logits come back.
* OnnxBackend: ONNX Runtime with the CUDA execution provider (onnxruntime-gpu) or the CPU one.

torch and onnxruntime are imported only when their backend is built, so the container needs just one of them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import ModelCardError, StageConfig
from .model_folder import ModelFolder
from .tta import flip_sets, mirrored_mean

BACKENDS = ("torch", "onnx")
DEVICES = ("cpu", "cuda")


class BackendError(RuntimeError):
    """The requested backend/device cannot run here."""


class Backend:
    """Runs one stage's network on patches of shape (1, channels, *patch_size)."""

    name = "base"

    def __init__(self, stage: StageConfig, device: str):
        self.stage = stage
        self.device = device
        self.flips = flip_sets(stage.tta)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (C, z, y, x) float32 of one pass."""
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Mean logits over the stage's mirror passes."""
        return mirrored_mean(self._forward, x, self.flips)


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, stage: StageConfig, device: str, weights_path: Path, threads: int | None = None):
        super().__init__(stage, device)
        import torch

        from .network import build_network

        self._torch = torch
        if threads:
            torch.set_num_threads(threads)
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendError("device cuda asked for, but torch sees no CUDA GPU")
        net = build_network(stage.architecture, stage.num_classes)
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=True)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ModelCardError(f"{weights_path}: cannot load the weights into the card's network: {exc}") from None
        self.net = net.eval().to(device)
        self._dev = torch.device(device)

    def predict(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode(), torch.autocast(device_type=self._dev.type, dtype=torch.float16,
                                                    enabled=self._dev.type == "cuda"):
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self._dev)
            total = None
            for axes in self.flips:
                dims = tuple(a + 2 for a in axes)
                y = self.net(torch.flip(xt, dims) if axes else xt)
                y = (torch.flip(y, dims) if axes else y).float()
                total = y if total is None else total + y
            total /= len(self.flips)
            return total[0].cpu().numpy()


class OnnxBackend(Backend):
    name = "onnx"

    def __init__(self, stage: StageConfig, device: str, weights_path: Path, threads: int | None = None):
        super().__init__(stage, device)
        import onnxruntime as ort

        available = ort.get_available_providers()
        if device == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise BackendError("device cuda asked for, but onnxruntime has no CUDAExecutionProvider "
                                   f"(available: {available}; install onnxruntime-gpu)")
            providers = [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC",
                                                    "arena_extend_strategy": "kSameAsRequested"}),
                         "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(weights_path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelCardError(f"{weights_path}: ONNX Runtime cannot load the model: {exc}") from None
        if device == "cuda" and "CUDAExecutionProvider" not in self.session.get_providers():
            # ONNX Runtime drops a provider whose libraries do not load (CUDA/cuDNN missing, driver too old) and
            # quietly runs on the CPU: refuse, so that `--device auto` can pick the CPU knowingly
            raise BackendError(f"{weights_path}: ONNX Runtime could not start its CUDA provider (libraries or driver); "
                               f"session providers: {self.session.get_providers()}")
        self.input_name = self.session.get_inputs()[0].name

    def _forward(self, x: np.ndarray) -> np.ndarray:
        (y,) = self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return y[0]


def available_backend(folder: ModelFolder) -> str:
    """'onnx' when every stage ships ONNX weights and onnxruntime imports, else 'torch'."""
    stages = [folder.card.stage(name) for name in folder.card.stage_names]
    if all("onnx" in s.files for s in stages):
        try:
            import onnxruntime  # noqa: F401

            return "onnx"
        except ImportError:
            pass
    return "torch"


def cuda_available(backend: str) -> bool:
    if backend == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            return False
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return False
        try:  # the provider is compiled in; is there a GPU behind it?
            import ctypes

            ctypes.CDLL("libcuda.so.1")
            return True
        except OSError:
            return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def make_backend(folder: ModelFolder, stage_name: str, backend: str, device: str,
                 threads: int | None = None) -> Backend:
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r} (choose from {BACKENDS})")
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r} (choose from {DEVICES})")
    stage = folder.card.stage(stage_name)
    path = folder.file_for(stage_name, backend)
    if backend == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise BackendError("backend torch asked for, but torch is not installed") from None
        return TorchBackend(stage, device, path, threads)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise BackendError("backend onnx asked for, but onnxruntime is not installed") from None
    return OnnxBackend(stage, device, path, threads)
