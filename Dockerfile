# syntax=docker/dockerfile:1
# rnnscope web app: CPU-only torch, htmx from npm (no CDN), non-root, listens on $PORT (7860).
#   docker build -t rnnscope .
#   docker run -p 7860:7860 rnnscope            # models: the checkpoint folders under models/zoo/
#   docker run -p 7860:7860 -v $PWD/my-models:/models -e RNNSCOPE_MODELS_DIR=/models rnnscope
#   docker run -p 7860:7860 -v rnnscope-data:/data rnnscope   # share links (shares.sqlite3) kept in a volume
# Where torch comes from (build arguments; the defaults take the CPU wheel from PyTorch's index):
#   --build-context torch-wheels=DIR --build-arg TORCH_FIND_LINKS=/wheels --build-arg TORCH_INDEX_URL=https://pypi.org/simple
#   installs torch from a folder of wheels (DIR, mounted at /wheels for that one step) where PyTorch's
#   index cannot be reached. scripts/check-image.sh builds and runs this file with podman that way.

# An empty folder unless --build-context torch-wheels=DIR replaces it.
FROM scratch AS torch-wheels

# ---- stage 1: browser files from the npm lockfile (htmx, Swagger UI) ------------------------
FROM node:20-bookworm-slim AS static
WORKDIR /src
ENV SCARF_ANALYTICS=false npm_config_update_notifier=false
COPY package.json package-lock.json ./
COPY scripts/copy-vendor.js scripts/
RUN npm ci --no-audit --no-fund && test -s static/vendor/htmx.min.js

# ---- stage 2: the app --------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=7860 \
    RNNSCOPE_DATA_DIR=/data
RUN useradd --create-home --uid 1000 rnnscope \
 && mkdir -p /data && chown rnnscope:rnnscope /data
WORKDIR /app
# The CPU wheel first (its own layer: large, rarely changes); pyproject's torch==2.13.0 is then satisfied.
# TORCH_VERSION is pyproject.toml's pin (tests/deploy/test_image.py checks they agree). A CUDA build is
# refused: it would add gigabytes this image never uses. So are the wheel's C++ test programs (torch/test,
# torch/bin but torch_shm_manager: ~130 MB); its headers stay, for any code that compiles kernels.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
RUN --mount=type=bind,from=torch-wheels,target=/wheels \
    pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
        ${TORCH_FIND_LINKS:+--find-links "${TORCH_FIND_LINKS}"} \
 && python -c "import torch; assert torch.version.cuda is None, 'not a CPU build: ' + torch.__version__" \
 && t=$(python -c "import os, torch; print(os.path.dirname(torch.__file__))") \
 && rm -rf "$t/test" && find "$t/bin" -type f ! -name torch_shm_manager -delete \
 && python -c "import torch; torch.ones(2) @ torch.ones(2)"
COPY pyproject.toml README.md ./
COPY models/ models/
COPY app/ app/
COPY templates/ templates/
COPY static/ static/
COPY --from=static /src/static/vendor/ static/vendor/
# Editable, so templates/ and static/ are found beside app/ in /app.
# (and compile the probe-ranking and cell-scan kernels into numba's cache, so no first request waits)
RUN pip install -e . && python -c "import app.main, models.trace" \
 && python -c "from models.score_kernels import compile_in_background; compile_in_background().join()" \
 && python -c "from models.cell_scan import compile_in_background; compile_in_background().join()"
USER rnnscope
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '7860'), timeout=4)"
CMD ["sh", "-c", "exec rnnscope serve --host 0.0.0.0 --port \"${PORT:-7860}\""]
