# GPU worker image: one `hpsearch worker` process that joins a shared Optuna study (PostgreSQL
# storage) and the study's parent run on an MLflow tracking server.
#
# Build from the repository root (the build context), e.g.
#   docker build -f docker/worker.Dockerfile -t hpsearch-worker .
# Run one worker on GPU 0 of this host, the database password read from a file:
#   docker run --rm --gpus device=0 \
#     -v "$PWD/docker/secrets/optuna_db_password.txt:/run/secrets/optuna_db_password:ro" \
#     -e HPSEARCH_STORAGE=postgresql+psycopg://optuna@db-host:5432/optuna \
#     -e HPSEARCH_STORAGE_PASSWORD_FILE=/run/secrets/optuna_db_password \
#     -e MLFLOW_TRACKING_URI=http://mlflow-host:5000 \
#     -v /path/to/shared/data:/srv/hpsearch/shared/data:ro \
#     hpsearch-worker studies/joint.yaml --quiet
# Arguments after the image name replace CMD and go to `hpsearch worker` (see its --help).
# Without HPSEARCH_STORAGE / MLFLOW_TRACKING_URI the worker uses the container-local defaults
# (SQLite files in the working directory): `docker run --rm hpsearch-worker studies/smoke.yaml`
# is an offline smoke check.
FROM tensorflow/tensorflow:2.21.0-gpu

# TF_FORCE_GPU_ALLOW_GROWTH: GPU memory is claimed as needed, so several workers can share a GPU
# (`hpsearch worker` sets it too). PIP_BREAK_SYSTEM_PACKAGES only matters if the base's Python
# is marked externally managed; this image is single-purpose.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    KERAS_BACKEND=tensorflow \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    HPSEARCH_CACHE_DIR=/var/cache/hpsearch

# The package only (docker/worker.Dockerfile.dockerignore keeps the rest of the checkout out).
WORKDIR /tmp/hpsearch-src
COPY pyproject.toml README.md ./
COPY hpsearch ./hpsearch
# Ubuntu's python3-blinker is distutils-installed and pip cannot upgrade it for Flask
# (an mlflow dependency; mlflow/mlflow#14107): install the new one beside it first.
RUN pip install --no-cache-dir --ignore-installed "blinker>=1.9" \
    && pip install --no-cache-dir . "psycopg[binary]>=3.1" \
    && rm -rf /tmp/hpsearch-src \
    && hpsearch --help > /dev/null

# A non-root user. The working directory mirrors a checkout: the study files' data path
# `../shared/data/...` resolves to /srv/hpsearch/shared/data, where the data is mounted.
RUN useradd --create-home --uid 10001 --user-group hpsearch \
    && mkdir -p /srv/hpsearch/main /srv/hpsearch/shared/data /var/cache/hpsearch \
    && chown hpsearch:hpsearch /srv/hpsearch/main /var/cache/hpsearch
COPY --chown=10001:10001 studies /srv/hpsearch/main/studies
COPY --chmod=0755 docker/with-db-password /usr/local/bin/with-db-password
WORKDIR /srv/hpsearch/main
USER 10001:10001

# The storage URL comes from $HPSEARCH_STORAGE (read by --storage), the tracking server from
# $MLFLOW_TRACKING_URI; SIGTERM (docker stop) closes the running trial and its MLflow run.
# with-db-password adds the password in $HPSEARCH_STORAGE_PASSWORD_FILE to that URL, if set,
# and then becomes `hpsearch worker` (exec: same process, signals reach hpsearch).
ENTRYPOINT ["with-db-password", "hpsearch", "worker"]
CMD ["studies/joint.yaml"]
