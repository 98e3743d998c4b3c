# The oO feature engine: one image for the flow and the API (`oo-features flow|serve`).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY features ./features
COPY connectors ./connectors
COPY flows ./flows
COPY serving ./serving
COPY oo_features ./oo_features
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["oo-features"]
CMD ["--help"]
