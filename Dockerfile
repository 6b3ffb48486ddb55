# The keyart image: every keyart process (docker-compose.yml runs one service
# per `keyart` subcommand). Pinned versions come from constraints.txt.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libgomp1: OpenMP for onnxruntime and LightGBM; libglib2.0-0: OpenCV's
# headless build.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY keyart ./keyart
COPY schemas ./schemas
COPY producers ./producers
COPY streams ./streams
COPY gateway ./gateway
COPY workers ./workers
COPY bandits ./bandits
COPY ranking ./ranking
RUN pip install -c constraints.txt .

RUN useradd --system --create-home --uid 10001 keyart \
    && mkdir -p /var/lib/keyart/posters /var/lib/keyart/state /var/cache/keyart \
    && chown -R keyart /var/lib/keyart /var/cache/keyart
USER keyart
WORKDIR /var/lib/keyart

EXPOSE 8000 9100
CMD ["keyart", "--help"]
