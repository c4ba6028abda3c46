# The workbench on CPU: the dashboard (default) or the REST API, chosen by argument.
#   docker build -t deepfake-workbench .      # needs models/image_model.pth: the model is baked in
#   docker run --init -p 8501:8501 deepfake-workbench                                    # dashboard
#   docker run --init -p 8000:8000 -e DEEPFAKE_API_KEYS=... deepfake-workbench serve --host 0.0.0.0   # API
# Any other command of `python -m deepfake` works too (detect, scan ...).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    DEEPFAKE_MODEL=/app/models/image_model.pth

WORKDIR /app

# CPU-only torch first: PyPI's default wheels bring CUDA (gigabytes). The versions are read from
# requirements.txt, which then finds them installed ("2.15.0+cpu" satisfies "==2.15.0").
COPY requirements.txt .
RUN pip install --index-url https://download.pytorch.org/whl/cpu $(grep -E '^(torch|torchvision)==' requirements.txt) \
 && pip install -r requirements.txt

# Source, app and model (see .dockerignore for what stays out). Run from /app, not installed, so
# the package finds app.py, reports/ and models/ next to it.
COPY . .
RUN test -f models/image_model.pth || { echo "models/image_model.pth is missing: train or copy a model first" >&2; exit 1; } \
 && useradd --create-home --uid 10001 --shell /usr/sbin/nologin workbench

USER workbench
EXPOSE 8501 8000

# Healthy when whichever server runs on its default port answers (API: /v1/health, dashboard: Streamlit's).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request\nfor url in sys.argv[1:]:\n    try:\n        urllib.request.urlopen(url, timeout=4)\n        sys.exit(0)\n    except OSError:\n        pass\nsys.exit(1)", "http://127.0.0.1:8000/v1/health", "http://127.0.0.1:8501/_stcore/health"]

ENTRYPOINT ["python", "-m", "deepfake"]
CMD ["dashboard", "--host", "0.0.0.0", "--port", "8501"]
