# The propensity server in a container: `docker build -t propensity .`, then see docs/deployment.md (or
# compose.yaml: the server with Redis and PostgreSQL). The image runs `propensity` as an unprivileged user on a
# workspace mounted at /workspace; its default command serves that workspace on port 8000.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[redis,postgres]"

FROM python:3.11-slim
# libgomp1: LightGBM's OpenMP runtime; gcc: compiles the native single-row scorer once (cached per C source),
# else scoring falls back to the slower numpy evaluator.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && useradd --create-home --uid 10001 propensity \
 && mkdir -p /workspace && chown propensity /workspace
USER propensity
WORKDIR /workspace
ENV PROPENSITY_CACHE_DIR=/home/propensity/.cache/propensity \
    PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=300s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["propensity"]
CMD ["serve", "--workspace", "/workspace", "--host", "0.0.0.0", "--port", "8000"]
