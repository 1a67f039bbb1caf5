# Refractium in a container: runs as an unprivileged user, listens on 8080
# (TCP and UDP), health-checked through the admin API on 127.0.0.1:9901.
#
#   docker build -t refractium .
#   docker run -d --name refractium -p 443:8080 -p 443:8080/udp \
#     -v "$PWD/refractium.toml:/etc/refractium/refractium.toml:ro" refractium
#
# Reload the config: docker kill --signal=HUP refractium (or let hot_reload see
# the file change). Stop: docker stop (SIGTERM, then the open connections drain
# for up to shutdown_grace_ms; give docker stop -t more than that).

FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /tmp/refractium
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install . \
    && rm -rf /tmp/refractium \
    && useradd --system --user-group --uid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin refractium
COPY packaging/container.toml /etc/refractium/refractium.toml

WORKDIR /
# Numeric, so that runAsNonRoot (Kubernetes) can check it is not root.
USER 10001:10001
EXPOSE 8080/tcp 8080/udp
# python's urllib: the slim image has no curl. Set REFRACTIUM_ADMIN_TOKEN when
# [admin] has a token.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; r = u.Request('http://127.0.0.1:9901/status'); t = os.environ.get('REFRACTIUM_ADMIN_TOKEN'); t and r.add_header('Authorization', 'Bearer ' + t); u.urlopen(r, timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["refractium"]
CMD ["run", "-c", "/etc/refractium/refractium.toml"]
