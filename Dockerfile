# The inference service alone: ONNX Runtime, no PyTorch, no training code.
#   docker build -t facedet-service:cpu .
#   docker build --build-arg RUNTIME=gpu -t facedet-service:gpu .
FROM python:3.11-slim

# cpu -> the `cpu` extra (onnxruntime); gpu -> the `gpu` extra (onnxruntime-gpu). Never both: a second
# ONNX Runtime package in one environment hides the GPU provider.
ARG RUNTIME=cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies in their own layer, from pyproject.toml alone, so a code change does not reinstall them.
# For gpu, the [cuda,cudnn] extras bring CUDA and cuDNN as wheels (the slim base has none);
# the service calls onnxruntime.preload_dlls() to load them.
COPY pyproject.toml ./
RUN python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; x = p['optional-dependencies']; print('\n'.join(p['dependencies'] + x['service'] + x[sys.argv[1]]))" "$RUNTIME" > requirements.txt \
    && if [ "$RUNTIME" = gpu ]; then sed -i 's/^onnxruntime-gpu/onnxruntime-gpu[cuda,cudnn]/' requirements.txt; fi \
    && pip install -r requirements.txt \
    && rm requirements.txt

RUN groupadd --system --gid 10001 facedet \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin facedet

# Owned by root, readable by the service user: the running service cannot alter its code or models.
COPY service/ ./service/
COPY models/ ./models/

ENV FACEDET_HOST=0.0.0.0 \
    FACEDET_PORT=8000 \
    FACEDET_MODELS_DIR=/app/models \
    FACEDET_SHUTDOWN_DELAY_S=2

# Numeric, so orchestrators can verify it is not root (runAsNonRoot).
USER 10001:10001
EXPOSE 8000

# The slim image has no curl; urlopen raises (exit 1) on a 503 from /readyz.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('FACEDET_PORT', '8000'), timeout=2)"]

# python -m service checks the settings and models (one clear line and exit status 2 if they are wrong),
# then serves with uvicorn.
ENTRYPOINT ["python", "-m", "service"]
