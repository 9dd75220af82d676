# One image for every runstream service (streams worker, sink, UI/API).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY runstream ./runstream
COPY producers ./producers
COPY streams ./streams
COPY sinks ./sinks
COPY ui ./ui
RUN pip install --no-cache-dir ".[server]"
USER nobody
