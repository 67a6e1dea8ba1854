# The scoring service image: `clm serve` on the @champion models of the registry named by
# MLFLOW_TRACKING_URI (or CLM_TRAINING__TRACKING_URI) and the online store named by
# CLM_SERVING__ONLINE_STORE. It listens on 0.0.0.0:3000, so it needs CLM_API_TOKEN (clm serve
# refuses a non-loopback address without one).
#
#   docker build -t clm-serving .
#   docker run -p 3000:3000 -e CLM_API_TOKEN=... -e MLFLOW_TRACKING_URI=http://mlflow:5000 \
#       -v /srv/clm:/data clm-serving
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CLM_SERVING__ONLINE_STORE=sqlite:////data/online.db

# libgomp1: XGBoost's OpenMP runtime; curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY clm ./clm
COPY features ./features
COPY training ./training
COPY serving ./serving
# The CPU-only XGBoost build (xgboost-cpu) comes with the project's dependencies; exact
# versions from the same constraints file as make.
RUN pip install -c constraints.txt . \
    && useradd --create-home --uid 10001 clm \
    && mkdir -p /data \
    && chown clm /data

USER clm
VOLUME ["/data"]
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:3000/readyz || exit 1
CMD ["clm", "serve", "--host", "0.0.0.0", "--port", "3000"]
