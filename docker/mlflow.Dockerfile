# MLflow tracking server image: the official MLflow image plus the PostgreSQL driver, so the
# server can keep runs in PostgreSQL (--backend-store-uri postgresql+psycopg://...).
#
#   docker build -f docker/mlflow.Dockerfile -t hpsearch-mlflow docker
#
# docker/compose.yaml builds and starts it with a PostgreSQL backend store and a volume for
# artifacts; on its own it serves a SQLite store in its home directory. The entrypoint
# with-db-password puts the password from the file in $MLFLOW_BACKEND_STORE_URI_PASSWORD_FILE
# into $MLFLOW_BACKEND_STORE_URI (which `mlflow server` reads), off the command line.
FROM ghcr.io/mlflow/mlflow:v3.17.2

RUN pip install --no-cache-dir "psycopg[binary]>=3.1" \
    && useradd --create-home --uid 10001 --user-group mlflow \
    && mkdir -p /mlartifacts \
    && chown mlflow:mlflow /mlartifacts

COPY --chmod=0755 with-db-password /usr/local/bin/with-db-password

USER 10001:10001
WORKDIR /home/mlflow
EXPOSE 5000
# 0.0.0.0 inside the container; what the host exposes is decided where the port is published.
ENTRYPOINT ["with-db-password"]
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", "--artifacts-destination", "/mlartifacts"]
