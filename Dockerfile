# propstream: the stream, the collector, the dashboard, the trainer and the CLI in one image.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY stream stream
COPY models models
COPY offline_train offline_train
COPY propstream propstream
COPY collector collector
COPY dashboard dashboard
RUN pip install --no-cache-dir .
ENV PROPSTREAM_DATA_DIR=/data
VOLUME ["/data"]
ENTRYPOINT ["propstream"]
