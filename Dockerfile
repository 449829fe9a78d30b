# mig-exporter as a container: the exporter by default, on the port documented in README.md.
# Run on a GPU host with the NVIDIA Container Toolkit, which mounts libnvidia-ml into the container:
#   docker run --gpus all -p 9458:9458 mig-exporter
# Without a GPU, try the simulated incident:
#   docker run -p 9458:9458 mig-exporter serve --fleet seed-incident
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mig_exporter ./mig_exporter
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
# NVML (utility) is all the exporter needs from the driver; no CUDA libraries.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=utility \
    PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home mig-exporter
# Reading NVML needs no privileges; `remediate --apply` does, and is run as root on purpose:
#   docker run --rm --gpus all --user 0 --privileged mig-exporter remediate ...
USER 10001
EXPOSE 9458
# `mig-exporter health` reads --web.listen-address and --web.config.file from the `serve` that is
# PID 1, so any address and TLS work unchanged; with basic auth, give the probe its credentials:
#   docker run -e MIG_EXPORTER_HEALTH_USERNAME=probe -e MIG_EXPORTER_HEALTH_PASSWORD_FILE=/run/secrets/probe ...
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s CMD ["mig-exporter", "health", "--timeout", "5s"]
ENTRYPOINT ["mig-exporter"]
CMD ["serve"]
