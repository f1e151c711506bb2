# FLARE inference image: predict.sh + inference/ + weights/ on ONNX Runtime (GPU when run with --gpus, else CPU).
# Built and run the organizers' way by the container issue's CI test; see README "Container".
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# Where Python packages come from: PyPI by default; PIP_EXTRA passes e.g. an index or wheelhouse option to pip.
ARG PIP_EXTRA=""
ARG ORT_PACKAGE="onnxruntime-gpu[cuda,cudnn]==1.31.1"

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python3 -m pip install ${PIP_EXTRA} "numpy>=1.26,<3" "SimpleITK==2.5.7" "connected-components-3d==4.1.1" "${ORT_PACKAGE}" \
    && useradd --create-home --uid 1000 flare \
    && mkdir -p /workspace/inputs /workspace/outputs \
    && chown -R flare /workspace

WORKDIR /workspace
COPY predict.sh /workspace/predict.sh
COPY inference /workspace/inference
COPY weights /workspace/weights
USER flare
CMD ["sh", "predict.sh"]
