"""TLS and ACL against a real TLS-enabled redis-server with a test CA made by openssl.

The server requires client certificates; a plain port next to the TLS one is used only to
set up the ACL user. Verification is on by default: the certificate must chain to the CA the
URL names and carry the host's name.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import stratacache as sc
from stratacache import MISS
from tests.redis_procs import RedisProcess, free_port, require_binary

pytestmark = pytest.mark.redis

PASSWORD = "s3cret-acl-pass"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(directory: Path, ca: str, name: str, san: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-subj",
             f"/CN={name}", "-out", f"{name}.csr", cwd=directory)  # fmt: skip
    (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile",
             f"{name}.ext", cwd=directory)  # fmt: skip


def _ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-subj", f"/CN={name}", "-days", "2", "-out", f"{name}.pem",
             cwd=directory)  # fmt: skip


@dataclass
class TLSServer:
    port: int
    certs: Path

    def url(self, query: str = "", user: str = "") -> str:
        base = f"rediss://{user}127.0.0.1:{self.port}/0"
        return f"{base}?{query}" if query else base

    @property
    def client(self) -> str:
        c = self.certs
        return f"ssl_certfile={c / 'client.pem'}&ssl_keyfile={c / 'client.key'}"

    @property
    def ca(self) -> str:
        return f"ssl_ca_certs={self.certs / 'ca.pem'}"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    require_binary("openssl")  # the test CA; in CI a missing openssl fails, never skips
    certs = tmp_path_factory.mktemp("certs")
    _ca(certs, "ca")
    _ca(certs, "other-ca")
    _issue(certs, "ca", "server", "IP:127.0.0.1,DNS:localhost")
    _issue(certs, "ca", "client", "DNS:client")
    tls_port = free_port()
    server = RedisProcess(
        tmp_path_factory.mktemp("redis-tls"), None,
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(certs / "server.pem"),
        "--tls-key-file", str(certs / "server.key"),
        "--tls-ca-cert-file", str(certs / "ca.pem"),
        "--tls-auth-clients", "yes",
    ).start()  # fmt: skip
    import redis

    admin = redis.Redis(port=server.port)
    # An application user that may touch stratacache's keys only.
    admin.execute_command(
        "ACL", "SETUSER", "app", "on", f">{PASSWORD}", "~sc:*", "~scmeta:*", "+@all"
    )
    admin.close()
    yield TLSServer(tls_port, certs)
    server.stop()


def _errors(cache: sc.TieredCache) -> int:
    return int(cache.stats()["tiers"][0]["errors"])


def test_verified_tls_with_client_certificate_sync_and_async(tls_server: TLSServer) -> None:
    url = tls_server.url(f"{tls_server.ca}&{tls_server.client}")
    cache = sc.TieredCache.from_urls(url, namespace="tls")
    cache.set("k", {"v": 1})
    assert cache.get("k") == {"v": 1}

    async def run() -> object:
        await cache.aset("a", [1, 2])
        return await cache.aget("a")

    assert asyncio.run(run()) == [1, 2]
    assert _errors(cache) == 0
    cache.close()


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("ssl_ca_certs={certs}/other-ca.pem&{client}", id="wrong-ca"),
        pytest.param("{client}", id="system-store-does-not-know-the-test-ca"),
        pytest.param("ssl_ca_certs={certs}/ca.pem", id="no-client-certificate"),
    ],
)
def test_a_certificate_that_does_not_verify_is_a_miss_never_an_exception(
    tls_server: TLSServer, query: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = tls_server.url(query.format(certs=tls_server.certs, client=tls_server.client))
    cache = sc.TieredCache.from_urls(url, namespace="tls")
    with caplog.at_level(logging.WARNING, logger="stratacache"):
        cache.set("k", 1)
        assert cache.get("k", MISS) is MISS
        assert asyncio.run(cache.aget("k", MISS)) is MISS
    assert _errors(cache) >= 1
    assert any("failed" in r.getMessage() for r in caplog.records)
    cache.close()


def test_acl_user_restricted_to_stratacache_keys(
    tls_server: TLSServer, caplog: pytest.LogCaptureFixture
) -> None:
    query = f"{tls_server.ca}&{tls_server.client}"
    cache = sc.TieredCache.from_urls(
        tls_server.url(query, user=f"app:{PASSWORD}@"), namespace="acl"
    )
    cache.set("k", "v")
    assert cache.get("k") == "v"
    assert cache.get_or_set("g", lambda: 7) == 7  # leases live under scmeta:
    cache.clear()
    assert cache.get("k", MISS) is MISS
    assert _errors(cache) == 0
    cache.close()

    wrong = sc.TieredCache.from_urls(
        tls_server.url(query, user="app:not-the-password@"), namespace="acl"
    )
    with caplog.at_level(logging.DEBUG, logger="stratacache"):
        assert wrong.get("k", MISS) is MISS
    assert _errors(wrong) >= 1
    shown = " ".join([repr(wrong), str(wrong.stats()), repr(wrong.tiers[0]), caplog.text])
    assert "not-the-password" not in shown
    wrong.close()


def test_tls_configuration_mistakes_fail_when_the_cache_is_built(
    tls_server: TLSServer, tmp_path: Path
) -> None:
    good = tls_server.url(tls_server.ca)
    cases = {
        tls_server.url(f"ssl_ca_certs={tmp_path}/missing.pem"): "cannot be read",
        good.replace("rediss://", "redis://"): "need a rediss://",
        f"{good}&ssl_cert_reqs=sometimes": "ssl_cert_reqs",
        f"{good}&ssl_check_hostname=perhaps": "ssl_check_hostname",
        f"{good}&ssl_keyfile={tls_server.certs}/client.key": "without ssl_certfile",
    }
    for url, message in cases.items():
        with pytest.raises(sc.ConfigurationError, match=message):
            sc.TieredCache.from_urls(url)
