"""TLS: the server over https, the client verifying it, mutual TLS -- each test stages an attack.

Real certificates made at test time by ``openssl`` (a throwaway CA, a stranger CA, a server
certificate for ``IP:127.0.0.1``, one for another name, a self-signed one, client
certificates), real sockets on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import io
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from blackhole_sync_http import (
    CertificateVerificationError,
    HttpTransport,
    RepositoryServer,
    ServerStats,
    TLSError,
    serve_repository,
    server_tls_context,
)
from http_helpers import Repo, content, sha256, wait_until
from tls_helpers import Pki, have_openssl, make_pki

from blackhole_sync.errors import ConfigurationError, DownloadError, SourceUnavailableError
from blackhole_sync.fetch.transport import Locator, VerifyingSink, fetch_with_fallback
from blackhole_sync.testing import TransportUnderTest, check_transport

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not have_openssl(), reason="needs the openssl command line"),
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def sink_for(blob: bytes) -> tuple[io.BytesIO, VerifyingSink]:
    buffer = io.BytesIO()
    sink = VerifyingSink(
        buffer, max_length=len(blob), expected_length=len(blob), expected_sha256=sha256(blob)
    )
    return buffer, sink


async def fetch_blob(transport: HttpTransport, url: str, blob: bytes) -> bytes:
    buffer, sink = sink_for(blob)
    await transport.fetch(Locator.url(url), sink, max_length=len(blob))
    sink.verify()
    return buffer.getvalue()


# -- it works with the right trust -----------------------------------------------------------


async def test_https_fetch_verifies_against_private_ca_bundle(repo: Repo, pki: Pki) -> None:
    blob = content(300_000, seed=7)
    digest = repo.put(blob)
    async with (
        serve_repository(repo.root, tls_cert=pki.server_cert, tls_key=pki.server_key) as server,
        HttpTransport(ca_file=str(pki.ca)) as transport,
    ):
        assert server.url.startswith("https://127.0.0.1:")
        assert await fetch_blob(transport, f"{server.url}/blobs/{digest}", blob) == blob
        part = await transport.read_range(
            Locator.url(f"{server.url}/blobs/{digest}"), 1000, 500, max_length=len(blob)
        )
        assert part == blob[1000:1500]


async def test_https_transport_passes_conformance(repo: Repo, pki: Pki) -> None:
    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[TransportUnderTest]:
        async with (
            serve_repository(repo.root, tls_cert=pki.server_cert, tls_key=pki.server_key) as server,
            HttpTransport(ca_file=str(pki.ca)) as transport,
        ):
            assert server.url.startswith("https://")
            yield TransportUnderTest(
                transport,
                lambda data: Locator.url(f"{server.url}/blobs/{repo.put(data)}"),
                lambda: Locator.url(f"{server.url}/blobs/{'0' * 64}"),
            )

    # No publish, announce, validator or query: HTTP fetches (and resumes) only.
    assert await check_transport(make) == [
        "fetch",
        "length_cap",
        "missing",
        "range",
        "cancellation",
        "close",
    ]


# -- a server the client must not trust ------------------------------------------------------


async def refused(
    repo: Repo, cert: Path, key: Path, **options: object
) -> tuple[CertificateVerificationError, int]:
    """Fetch from a server presenting ``cert``; return the error and the server's request count
    (0: the request never left the client)."""
    blob = content(1000, seed=3)
    digest = repo.put(blob)
    async with (
        serve_repository(repo.root, tls_cert=cert, tls_key=key) as server,
        HttpTransport(**options) as transport,
    ):
        with pytest.raises(CertificateVerificationError) as caught:
            await fetch_blob(transport, f"{server.url}/blobs/{digest}", blob)
        assert transport.stats.retries == 0  # a certificate does not verify on a second try
        return caught.value, server.stats.requests


async def test_self_signed_impostor_refused_by_default_trust_store(repo: Repo, pki: Pki) -> None:
    error, requests = await refused(repo, pki.self_signed_cert, pki.self_signed_key)
    assert "certificate failed verification" in str(error)
    assert isinstance(error, DownloadError) and requests == 0


async def test_private_ca_server_refused_without_ca_bundle(repo: Repo, pki: Pki) -> None:
    error, requests = await refused(repo, pki.server_cert, pki.server_key)
    assert "certificate failed verification" in str(error) and requests == 0


async def test_impostor_from_another_ca_refused(repo: Repo, pki: Pki) -> None:
    # the client trusts only the stranger CA; the server's certificate is from the test CA
    error, requests = await refused(
        repo, pki.server_cert, pki.server_key, ca_file=str(pki.other_ca)
    )
    assert "certificate failed verification" in str(error) and requests == 0


async def test_self_signed_impostor_refused_despite_private_ca_bundle(repo: Repo, pki: Pki) -> None:
    error, requests = await refused(
        repo, pki.self_signed_cert, pki.self_signed_key, ca_file=str(pki.ca)
    )
    assert "certificate failed verification" in str(error) and requests == 0


async def test_valid_certificate_for_another_host_refused(repo: Repo, pki: Pki) -> None:
    # signed by the trusted CA, but for mirror.example / 127.0.0.2, served at 127.0.0.1
    error, requests = await refused(
        repo, pki.other_name_cert, pki.other_name_key, ca_file=str(pki.ca)
    )
    assert "certificate failed verification" in str(error)
    assert "mismatch" in str(error) and requests == 0


async def test_impostor_mirror_skipped_and_next_mirror_verifies(repo: Repo, pki: Pki) -> None:
    blob = content(50_000, seed=9)
    digest = repo.put(blob)
    failures: list[BaseException] = []
    buffer, sink = sink_for(blob)
    async with (
        serve_repository(
            repo.root, tls_cert=pki.self_signed_cert, tls_key=pki.self_signed_key
        ) as impostor,
        serve_repository(repo.root, tls_cert=pki.server_cert, tls_key=pki.server_key) as good,
        HttpTransport(ca_file=str(pki.ca)) as transport,
    ):
        bad_url, good_url = f"{impostor.url}/blobs/{digest}", f"{good.url}/blobs/{digest}"
        used = await fetch_with_fallback(
            [(transport, Locator.url(bad_url)), (transport, Locator.url(good_url))],
            sink,
            on_failure=lambda _, exc: failures.append(exc),
        )
        assert impostor.stats.requests == 0
    assert used.value == good_url and buffer.getvalue() == blob
    assert [type(e) for e in failures] == [CertificateVerificationError]


async def test_options_that_would_disable_verification_are_refused() -> None:
    for option, value in [
        ("ssl", False),
        ("verify", False),
        ("verify_ssl", False),
        ("insecure", True),
        ("ssl_verify", False),
    ]:
        with pytest.raises(ConfigurationError, match="cannot be disabled"):
            HttpTransport(**{option: value})


async def test_unreadable_tls_files_refused_at_construction(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigurationError, match="CA bundle"):
        HttpTransport(ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigurationError, match="client certificate"):
        HttpTransport(cert_file=str(pki.client_cert), key_file=str(pki.server_key))
    with pytest.raises(ConfigurationError, match="needs cert_file"):
        HttpTransport(key_file=str(pki.client_key))


async def test_https_origin_redirecting_to_plain_http_refused(repo: Repo, pki: Pki) -> None:
    blob = content(1000, seed=5)
    digest = repo.put(blob)
    async with serve_repository(repo.root) as plain:

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(f"{plain.url}/blobs/{digest}")

        app = web.Application()
        app.router.add_get("/{path:.*}", redirect)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(
                runner,
                "127.0.0.1",
                0,
                ssl_context=server_tls_context(pki.server_cert, pki.server_key),
            )
            await site.start()
            port = runner.addresses[0][1]
            async with HttpTransport(ca_file=str(pki.ca), retries=0) as transport:
                with pytest.raises(TLSError, match="redirect from https"):
                    await fetch_blob(transport, f"https://127.0.0.1:{port}/blobs/{digest}", blob)
        finally:
            await runner.cleanup()


@contextlib.asynccontextmanager
async def plain_http_redirecting_to(url: str) -> AsyncIterator[str]:
    """A plain ``http://`` server that redirects every request to ``url``; yields its base URL."""

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(url)

    app = web.Application()
    app.router.add_get("/{path:.*}", redirect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_plain_http_redirecting_to_an_untrusted_https_mirror_refused(
    repo: Repo, pki: Pki
) -> None:
    # No TLS files: the trust store is loaded lazily, and an https hop reached through an
    # http redirect is verified against the system store all the same.
    blob = content(1000, seed=6)
    digest = repo.put(blob)
    async with (
        serve_repository(repo.root, tls_cert=pki.server_cert, tls_key=pki.server_key) as tls,
        plain_http_redirecting_to(f"{tls.url}/blobs/{digest}") as plain,
        HttpTransport(retries=0) as transport,
    ):
        with pytest.raises(CertificateVerificationError):
            await fetch_blob(transport, f"{plain}/blobs/{digest}", blob)
        assert tls.stats.requests == 0


async def test_plain_http_redirecting_to_https_keeps_the_private_ca(repo: Repo, pki: Pki) -> None:
    blob = content(1000, seed=7)
    digest = repo.put(blob)
    async with (
        serve_repository(repo.root, tls_cert=pki.server_cert, tls_key=pki.server_key) as tls,
        plain_http_redirecting_to(f"{tls.url}/blobs/{digest}") as plain,
        HttpTransport(ca_file=str(pki.ca), retries=0) as transport,
    ):
        assert await fetch_blob(transport, f"{plain}/blobs/{digest}", blob) == blob


# -- mutual TLS -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def mtls_server(repo: Repo, pki: Pki) -> AsyncIterator[tuple[str, bytes, ServerStats]]:
    blob = content(20_000, seed=11)
    digest = repo.put(blob)
    async with serve_repository(
        repo.root, tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca
    ) as server:
        yield f"{server.url}/blobs/{digest}", blob, server.stats


async def test_anonymous_client_refused_by_mtls_server(repo: Repo, pki: Pki) -> None:
    async with (
        mtls_server(repo, pki) as (url, blob, stats),
        HttpTransport(ca_file=str(pki.ca), retries=0) as transport,
    ):
        with pytest.raises(SourceUnavailableError, match="client certificate"):
            await fetch_blob(transport, url, blob)
    assert stats.requests == 0  # the request never reached the handler


async def test_client_cert_from_stranger_ca_refused_by_mtls_server(repo: Repo, pki: Pki) -> None:
    async with (
        mtls_server(repo, pki) as (url, blob, stats),
        HttpTransport(
            ca_file=str(pki.ca),
            cert_file=str(pki.stranger_cert),
            key_file=str(pki.stranger_key),
            retries=0,
        ) as transport,
    ):
        with pytest.raises(SourceUnavailableError):
            await fetch_blob(transport, url, blob)
    assert stats.requests == 0


async def test_mtls_client_with_trusted_certificate_accepted(repo: Repo, pki: Pki) -> None:
    async with (
        mtls_server(repo, pki) as (url, blob, stats),
        HttpTransport(
            ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key)
        ) as transport,
    ):
        assert await fetch_blob(transport, url, blob) == blob
    assert stats.requests == 1


async def test_mtls_client_cert_does_not_widen_server_trust(repo: Repo, pki: Pki) -> None:
    # presenting a client certificate changes nothing about verifying the server
    async with (
        serve_repository(
            repo.root, tls_cert=pki.self_signed_cert, tls_key=pki.self_signed_key
        ) as server,
        HttpTransport(
            ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key)
        ) as transport,
    ):
        with pytest.raises(CertificateVerificationError):
            await fetch_blob(transport, f"{server.url}/root.json", b"x")


# -- server entry points ----------------------------------------------------------------------


async def test_server_refuses_tls_key_without_cert_and_bad_key(repo: Repo, pki: Pki) -> None:
    with pytest.raises(ValueError, match="need tls_cert"):
        async with serve_repository(repo.root, tls_key=pki.server_key):
            pass
    with pytest.raises(ValueError, match="cannot load TLS certificate"):
        async with serve_repository(repo.root, tls_cert=pki.server_cert, tls_key=pki.client_key):
            pass


async def test_repository_server_hook_serves_https(repo: Repo, pki: Pki) -> None:
    urls: list[str] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            await RepositoryServer().serve(
                repo.root,
                "127.0.0.1",
                0,
                ready=urls.append,
                tls_cert=pki.server_cert,
                tls_key=pki.server_key,
            )

        tg.start_soon(run)
        await wait_until(lambda: bool(urls))
        assert urls[0].startswith("https://127.0.0.1:")
        async with HttpTransport(ca_file=str(pki.ca)) as transport:
            root = (repo.root / "root.json").read_bytes()
            assert await fetch_blob(transport, f"{urls[0]}/root.json", root) == root
        tg.cancel_scope.cancel()


async def test_standalone_server_serves_https_and_exits_0(repo: Repo, pki: Pki) -> None:
    command = [
        sys.executable, "-m", "blackhole_sync_http", str(repo.root), "--port", "0",
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--tls-client-ca", str(pki.ca),
    ]  # fmt: skip
    async with await anyio.open_process(command, stderr=None) as process:
        assert process.stdout is not None
        output = b""
        with anyio.fail_after(20):
            while not output.endswith(b"\n"):
                output += await process.stdout.receive()
        url = output.decode().strip()
        assert url.startswith("https://127.0.0.1:")
        root = (repo.root / "root.json").read_bytes()
        async with HttpTransport(
            ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key)
        ) as transport:
            assert await fetch_blob(transport, f"{url}/root.json", root) == root
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            assert await process.wait() == 0


async def test_standalone_server_refuses_unloadable_tls_files(repo: Repo, pki: Pki) -> None:
    command = [
        sys.executable, "-m", "blackhole_sync_http", str(repo.root), "--port", "0",
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.client_key),
    ]  # fmt: skip
    result = await anyio.run_process(command, check=False)
    assert result.returncode == 2
    assert b"cannot load TLS certificate" in result.stderr
