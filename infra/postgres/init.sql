-- One Postgres for the single-host stack: Dagster's instance (the default database), MLflow's tracking
-- store and the gateway's interaction log, each in its own database.
CREATE DATABASE mlflow;
CREATE DATABASE gateway;
