"""Mutual TLS on the listener (`[server] tls_*`): certificates made by the test with the openssl CLI.

`serve()` runs as in production, on a loopback port: a client with a certificate of the configured CA
gets its answer; a client without one, or with one from another CA, fails in the TLS handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from broker.runtime.serve import serve
from tests.helpers.app import KELA_TOKEN, auth, base_settings
from tests.helpers.support import closed_port, wait_for

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _leaf(d: Path, name: str, ca: str, extensions: str) -> None:
    (d / f"{name}.ext").write_text(extensions + "\nauthorityKeyIdentifier=keyid\n"
                                   "subjectKeyIdentifier=hash\n", "ascii")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca")
    _ca(d, "other-ca")
    _leaf(d, "server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    _leaf(d, "partner", "ca", "extendedKeyUsage=clientAuth")
    _leaf(d, "stranger", "other-ca", "extendedKeyUsage=clientAuth")
    return d


def _client_context(pki: Path, cert: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert is not None:
        context.load_cert_chain(pki / f"{cert}.pem", pki / f"{cert}.key")
    return context


async def test_mutual_tls_admits_only_clients_with_a_certificate_of_the_ca(pki: Path,
                                                                           tmp_path: Path) -> None:
    port = closed_port()
    settings = base_settings(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}", server={
        "port": port, "tls_cert_file": str(pki / "server.pem"), "tls_key_file": str(pki / "server.key"),
        "tls_client_ca_file": str(pki / "ca.pem")})
    stop = asyncio.Event()
    server = asyncio.ensure_future(serve(settings, until=stop.wait))
    base = f"https://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async def healthy() -> bool:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{base}/healthz", ssl=_client_context(pki, "partner")) as r:
                        return r.status == 200
                return False

            await wait_for(healthy, timeout=20, what="the TLS listener")
            async with http.get(f"{base}/v1/updates", headers=auth(KELA_TOKEN),
                                ssl=_client_context(pki, "partner")) as r:
                assert r.status == 200

            for cert in (None, "stranger"):
                with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
                    async with http.get(f"{base}/healthz", ssl=_client_context(pki, cert)) as r:
                        await r.read()

        # At the TLS layer itself: the server ends the handshake with "certificate required".
        with pytest.raises((ssl.SSLError, ConnectionError)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                           ssl=_client_context(pki, None))
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                await writer.drain()
                data = await asyncio.wait_for(reader.read(100), timeout=5)
                assert not data.startswith(b"HTTP/"), data
                raise ConnectionError("closed without an answer")
            finally:
                writer.close()
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=20)
