# One image for every Kabuto agent; the command picks what runs (`kabuto run <agent>`).
#
#   docker build -t kabuto:local .
#   docker run --rm kabuto:local --help
#
# The project is installed non-editably, so `kabuto migrate` must be told where the SQL files
# are: they live in /app/migrations (the CLI's default points inside site-packages).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    KABUTO_KEY_DIR=/var/lib/kabuto/keys

# The uid every container runs as (compose.yaml pins the same one): private keys are written
# 0600 by `kabuto ca ...` in the setup container and must stay readable by the agents.
ARG KABUTO_UID=10001
ARG KABUTO_GID=10001
RUN groupadd --system --gid "${KABUTO_GID}" kabuto \
 && useradd --system --uid "${KABUTO_UID}" --gid kabuto --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin kabuto \
 && install -d -o kabuto -g kabuto -m 0755 /var/lib/kabuto \
 && install -d -o kabuto -g kabuto -m 0700 /var/lib/kabuto/keys \
 && install -d -o kabuto -g kabuto -m 0755 /var/lib/kabuto/broker

WORKDIR /app
# Source (and migrations/) stay owned by root: the agents only read them.
COPY . /app
RUN pip install --no-cache-dir /app \
 && rm -rf /app/build /app/*.egg-info \
 && test -n "$(ls /app/migrations/*.sql)"

# An empty named volume mounted at /var/lib/kabuto/keys inherits that directory's owner and
# mode from the image (kabuto, 0700), so the non-root setup container can write the keys.
# /var/lib/kabuto/broker (0755) holds the broker users' definitions (salted hashes, no
# password), which the broker-users service reads as RabbitMQ's own user.
USER kabuto:kabuto

ENTRYPOINT ["kabuto"]
CMD ["run", "all"]
