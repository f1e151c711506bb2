# FLARE inference image: predict.sh + inference/ + weights/ on ONNX Runtime (GPU when run with --gpus, else CPU).
# Build:  docker build -t flare-uda .                       (python:3.11-slim-bookworm base, packages from PyPI)
# Here:   scripts/container/build.sh                        (local debootstrap base, wheelhouse served on localhost)
# Run as the organizers do: see README "Container". Build arguments:
#   BASE_IMAGE   any Debian-like image with python3 (3.11) and its venv module
#   PIP_EXTRA    extra pip options, e.g. "--no-index --find-links http://127.0.0.1:8765/" (with docker build --network host)
#   ORT_PACKAGES ONNX Runtime: the default is onnxruntime-gpu with the CUDA 13 + cuDNN 9 libraries from PyPI that
#                its CUDA provider loads (the [cuda,cudnn] extras minus cuFFT, which only FFT operators dlopen);
#                "onnxruntime==1.31.1" gives a CPU-only image
#   PACKAGES     the engine's other requirements (pyproject.toml's, pinned; scripts/container/wheels.sh reads them here)
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- builder: a virtual environment in /opt/venv (pip and setuptools removed once it is filled)
FROM ${BASE_IMAGE} AS builder
ARG PIP_EXTRA=""
ARG ORT_PACKAGES="onnxruntime-gpu==1.31.1 nvidia-cuda-runtime==13.5.37 nvidia-cublas==13.10.0.20 nvidia-curand==10.4.5.25 nvidia-cuda-nvrtc==13.5.37 nvidia-cudnn-cu13==9.28.1.4"
ARG PACKAGES="numpy==2.4.6 SimpleITK==2.5.7 connected-components-3d==4.1.1"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# PIP_EXTRA, ORT_PACKAGES and PACKAGES are word-split on purpose (lists of options and requirements)
# hadolint ignore=SC2086
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/python -m pip install --no-compile ${PIP_EXTRA} ${PACKAGES} ${ORT_PACKAGES} \
    && /opt/venv/bin/python -m pip uninstall -y -q pip setuptools \
    && /opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib >/dev/null \
    && find /opt/venv/lib -type d -path '*/site-packages/nvidia/*/lib' > /opt/venv/nvidia-libs.conf

# ---- the image: base + venv + engine; no pip, no compiler, no training code
FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=builder /opt/venv /opt/venv
# The pip CUDA/cuDNN libraries carry no rpath to each other: register their folders with the dynamic loader.
RUN cp /opt/venv/nvidia-libs.conf /etc/ld.so.conf.d/flare-nvidia-pip.conf \
    && ldconfig \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin flare \
    && mkdir -p /workspace/inputs /workspace/outputs \
    && chown flare:flare /workspace /workspace/inputs /workspace/outputs
WORKDIR /workspace
COPY predict.sh /workspace/predict.sh
COPY inference /workspace/inference
COPY weights /workspace/weights
# every case starts a fresh container: ship the bytecode instead of compiling it at each start
RUN python3 -m compileall -q /workspace/inference >/dev/null
USER 1000:1000
CMD ["sh", "predict.sh"]
