# The hitrun worker image.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY agents ./agents
COPY schemas ./schemas
COPY dev ./dev
COPY hitrun ./hitrun
RUN pip install --no-cache-dir .
RUN useradd --create-home hitrun && mkdir -p /var/lib/hitrun && chown hitrun /var/lib/hitrun
USER hitrun
ENV HITRUN_WEB_HOST=0.0.0.0 HITRUN_DATA_DIR=/var/lib/hitrun
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:6066/healthz')" || exit 1
ENTRYPOINT ["hitrun"]
CMD ["worker"]
