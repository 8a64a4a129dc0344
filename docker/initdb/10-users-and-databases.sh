#!/usr/bin/env bash
# Run once by the postgres image, on the first start with an empty data volume, as the
# superuser POSTGRES_USER while the server listens on its Unix socket only.
#
# One user and one database per service, each user owning its own database and no other
# user allowed to connect to it: `optuna` (the Optuna storage, for the workers) and `mlflow`
# (the tracking server's backend store). Each password comes from the file its
# *_DB_PASSWORD_FILE variable names (a Compose secret); a missing or empty one stops the
# first start before anything is created, so no user ever exists without a password.
set -euo pipefail

USERS=(optuna:OPTUNA_DB_PASSWORD_FILE mlflow:MLFLOW_DB_PASSWORD_FILE)

for user in "${USERS[@]}"; do
    variable=${user#*:}
    file=${!variable:-} # the value of the variable named, e.g. OPTUNA_DB_PASSWORD_FILE
    if [[ -z $file || ! -f $file || ! -s $file ]]; then
        echo "initdb: $variable must name a non-empty password file for user ${user%%:*}" \
            "(got '${file}')" >&2
        exit 1
    fi
done

create_user_and_database() { # NAME PASSWORD_FILE_VARIABLE
    local name=$1 variable=$2
    local password
    # Trailing newlines dropped, as the image does for POSTGRES_PASSWORD_FILE and
    # with-db-password does.
    password=$(<"${!variable}")
    if [[ -z $password ]]; then
        echo "initdb: the password file for user $name holds only newlines" >&2
        exit 1
    fi
    # The password goes to psql through its environment (\getenv), not its command line,
    # and into the SQL as a quoted literal (:'password').
    DB_USER_PASSWORD=$password psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
        --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" --set=name="$name" <<'SQL'
\getenv password DB_USER_PASSWORD
SET log_min_error_statement = panic;  -- a failing CREATE ROLE is not logged with its password
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
    echo "initdb: user $name owns database $name"
}

for user in "${USERS[@]}"; do
    create_user_and_database "${user%%:*}" "${user#*:}"
done
