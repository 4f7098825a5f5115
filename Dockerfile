# OpenRouter Chat in a container: the same `python app.py` a Space runs, on port 7860.
#   docker build -t openrouter-chat .
#   docker run -p 7860:7860 -e OPENROUTER_API_KEY=... -v chat-data:/data openrouter-chat
FROM python:3.12-slim

# HOST=0.0.0.0: the app's own default is 127.0.0.1 (a local `make run` serves this machine
# only), but a container is reached through its published port, from outside its loopback.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HOST=0.0.0.0 \
    PORT=7860 \
    DATA_DIR=/data

# tini as PID 1 forwards SIGTERM to the app (a bare PID 1 ignores signals it has no handler
# for), so `docker stop` and Space restarts shut down promptly and the sync can flush.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin app

WORKDIR /app

# Dependencies first, in their own layer: editing the code does not reinstall them.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# The code stays owned by root (the app cannot rewrite itself); only data and logs are its own.
COPY . .
RUN mkdir -p /data /app/logs && chown app:app /data /app/logs

USER app
VOLUME /data
EXPOSE 7860

HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:' + os.environ.get('PORT', '7860') + '/'; sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)"]

ENTRYPOINT ["tini", "--"]
CMD ["python", "app.py"]
