# propstream: the stream, the collector, the dashboard, the trainer and the CLI in one image.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY schemas schemas
COPY stream stream
COPY models models
COPY offline_train offline_train
COPY propstream propstream
COPY collector collector
COPY dashboard dashboard
# a C compiler for stream/_cells.pyx (Cython), removed once the package is built
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir . \
    && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/*
ENV PROPSTREAM_DATA_DIR=/data
VOLUME ["/data"]
ENTRYPOINT ["propstream"]
