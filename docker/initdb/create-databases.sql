-- Run once by the postgres image, on the first start with an empty data volume, as
-- POSTGRES_USER and connected to POSTGRES_DB (`optuna`: the Optuna storage).
-- The second database is the MLflow tracking server's backend store.
CREATE DATABASE mlflow;
