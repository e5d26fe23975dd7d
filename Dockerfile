# Build stage: compile the native sampler into a wheel.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY setup.cfg setup.py pyproject.toml README.md ./
COPY mab ./mab
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: the installed package only, no compiler, as a non-root user.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin mab
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER mab
ENV PYTHONUNBUFFERED=1 MAB_HOST=0.0.0.0 MAB_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --start-period=20s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status != 200)"
STOPSIGNAL SIGTERM
CMD ["mab", "serve", "--host", "0.0.0.0"]
