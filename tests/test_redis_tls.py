"""--redis-url rediss://: the redis store over TLS, against a real redis-server that
listens with TLS only on the port mab is given (its plain port is the suite's own
way in), with a CA, a server certificate for 127.0.0.1 and a key made by openssl."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_support import RedisServer
from tests.support import HOST, free_port, run_server
from tests.test_redis import counts, feedback, until


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.fail("openssl is not installed: it makes the test's certificates")
    subprocess.run([binary, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a key and certificate for 127.0.0.1 signed by it."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=mab test CA", "-keyout", "ca.key", "-out", "ca.crt",
             cwd=directory)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={HOST}",
             "-keyout", "server.key", "-out", "server.csr", cwd=directory)  # fmt: skip
    (directory / "san.ext").write_text(f"subjectAltName=IP:{HOST}\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
             cwd=directory)  # fmt: skip
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    ca, cert, key = _certificates(tmp_path)
    tls_port = free_port()
    server = RedisServer(tmp_path)
    server.extra = (
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(cert),
        "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    server.start()
    try:
        yield server, tls_port, ca
    finally:
        server.stop()


def test_feedback_and_the_mirror_over_tls(tls_redis: tuple[RedisServer, int, Path]) -> None:
    """With a rediss:// URL naming the CA, /feedback writes through TLS and the mirror
    follows; the counts are in Redis."""
    server, tls_port, ca = tls_redis
    url = f"rediss://{HOST}:{tls_port}/0?ssl_ca_certs={ca}&ssl_cert_reqs=required"
    args = ("--store", "redis", "--redis-url", url, "--redis-timeout", "5")
    with run_server(*args) as mab:
        events = [{"id": "tls-arm", "reward": 1, "count": 3, "event_id": "tls-1"}]
        assert feedback(mab, events) == {"applied": 1, "new_arms": 1, "duplicates": 0}
        until(lambda: counts(mab, "tls-arm") == (3.0, 0.0))  # through the mirror
    stored = server.client()
    try:
        assert any(stored.scan_iter(count=1000)), "nothing was written to Redis"
    finally:
        stored.close()


def test_a_plain_url_to_a_tls_port_is_a_start_up_error(
    tls_redis: tuple[RedisServer, int, Path],
) -> None:
    """redis:// to a port that speaks only TLS: mab does not start, and says why."""
    _, tls_port, _ = tls_redis
    args = ("--store", "redis", "--redis-url", f"redis://{HOST}:{tls_port}/0")
    with pytest.raises(AssertionError, match="server exited"):
        with run_server(*args, timeout=60):
            pass
