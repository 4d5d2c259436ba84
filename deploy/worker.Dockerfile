# The Kepler worker (also `kepler codec-server` and the CLI): small and non-root.
#   docker build -f deploy/worker.Dockerfile -t kepler-worker .
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md worker.py ./
COPY kepler ./kepler
COPY workflows ./workflows
COPY activities ./activities
COPY starter ./starter
COPY sandbox ./sandbox
RUN python -m venv /opt/kepler \
 && /opt/kepler/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/kepler/bin/pip install --no-cache-dir '.[tracing]'

FROM python:3.12-slim
RUN groupadd --system --gid 10001 kepler \
 && useradd --system --uid 10001 --gid kepler --home-dir /home/kepler --create-home kepler
COPY --from=build /opt/kepler /opt/kepler
ENV PATH=/opt/kepler/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KEPLER_CONFIG=/etc/kepler/kepler.yaml \
    KEPLER_LOG_FORMAT=json \
    KEPLER_METRICS_ADDRESS=0.0.0.0:9464
USER 10001:10001
WORKDIR /home/kepler
EXPOSE 9464
ENTRYPOINT ["kepler"]
CMD ["worker"]
