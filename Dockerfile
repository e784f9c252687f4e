# Multi-stage: install the pinned dependencies in a build stage, run the source as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt ./
COPY app ./app
# Install the project to resolve its pinned dependencies, then drop it: the runtime runs the source tree.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt . \
 && /opt/venv/bin/pip uninstall -y mrdhub

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 mrdhub
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/mrdhub
COPY alembic.ini ./
COPY migrations ./migrations
COPY protocols ./protocols
COPY app ./app
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONPATH=/srv/mrdhub
USER mrdhub
EXPOSE 8000
CMD ["sh", "-c", "alembic upgrade head && exec uvicorn app.main:create_app --factory --host 0.0.0.0 --port 8000"]
