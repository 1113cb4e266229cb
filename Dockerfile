# The coldlabel image: CLI, Celery workers, migrations and Flower. The LLM runs in its own container (vLLM),
# so this image is CPU-only: torch comes from the CPU wheel index (an exact pin, like scripts/setup.sh).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    COLDLABEL_DATA__ROOT=/data
WORKDIR /app

RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# Dependencies first (cached while only the code changes), then the code.
COPY pyproject.toml README.md ./
COPY coldlabel ./coldlabel
COPY retrieval ./retrieval
COPY labeler ./labeler
COPY workers ./workers
COPY trainer ./trainer
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install '.[monitor]'

RUN useradd --create-home coldlabel && mkdir -p /data && chown coldlabel /data
USER coldlabel
VOLUME ["/data"]
CMD ["coldlabel", "--help"]
