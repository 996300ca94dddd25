"""Benchmark of the HTTP plugin on 127.0.0.1 (issue 4).

    .venv/bin/python bench/bench_http.py [--size-mib 256]

Serves a random blob with ``python -m blackhole_sync_http`` (a subprocess) and measures, each
client in its own subprocess:

- throughput of the plugin client (verifying sha256 as it writes to a file, no fsync) and of
  ``curl -o`` (skipped with a note if curl is missing); ratio (target >= 0.7);
- accuracy of a 50 MB/s bandwidth limit over 5 s (target: within 10%);
- peak RSS of the client process (target < 64 MB);
- bytes re-sent when a transfer is cut at 50% and resumed (target < 1% of the blob), counted
  as body bytes the client read off the network in both attempts minus the blob size.

The last line printed is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024
RATE = 50_000_000
RATE_SECONDS = 5.0


def _client(url: str, sha: str, size: int, out: str, rate: int | None, cut: int | None) -> None:
    import anyio
    from blackhole_sync_http import HttpTransport

    from blackhole_sync.fetch.transport import Locator, VerifyingSink

    async def main() -> dict[str, float]:
        locator = Locator.url(url)
        options = {"rate_limit": rate} if rate else {}
        async with HttpTransport(**options) as transport:
            start = time.perf_counter()
            with open(out, "wb") as f:
                sink = VerifyingSink(f, max_length=size, expected_length=size, expected_sha256=sha)
                if rate:
                    with anyio.move_on_after(RATE_SECONDS):
                        await transport.fetch(locator, sink, max_length=size)
                    elapsed = time.perf_counter() - start
                    return {"bytes": sink.received, "elapsed": elapsed}
                if cut is not None:
                    with anyio.CancelScope() as scope:

                        class Cut:
                            @property
                            def received(self) -> int:
                                return sink.received

                            async def write(self, data: bytes) -> None:
                                await sink.write(data)
                                if sink.received >= cut:
                                    scope.cancel()

                        await transport.fetch(locator, Cut(), max_length=size)
                else:
                    await transport.fetch(locator, sink, max_length=size)
            if cut is not None:
                with open(out, "r+b") as f:
                    sink = VerifyingSink(
                        f, max_length=size, expected_length=size, expected_sha256=sha, resume=True
                    )
                    await transport.fetch(locator, sink, max_length=size, start=sink.received)
            sink.verify()
            elapsed = time.perf_counter() - start
            return {
                "bytes": sink.received,
                "elapsed": elapsed,
                "network_bytes": transport.stats.bytes_received,
            }

    result = anyio.run(main)
    result["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


def _run_client(*args: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, "--client", *args], capture_output=True, text=True
    )
    if output.returncode:
        raise SystemExit(f"client failed:\n{output.stderr}")
    return json.loads(output.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--client", nargs=6, metavar=("URL", "SHA", "SIZE", "OUT", "RATE", "CUT"))
    args = parser.parse_args()
    if args.client:
        url, sha, size, out, rate, cut = args.client
        _client(url, sha, int(size), out, int(rate) or None, int(cut) if cut != "-" else None)
        return

    size = args.size_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    server = None
    try:
        (work / "repo" / "blobs").mkdir(parents=True)
        digest = hashlib.sha256()
        tmp_blob = work / "repo" / "blobs" / "tmp"
        with open(tmp_blob, "wb") as f:
            for _ in range(args.size_mib):
                block = os.urandom(MIB)
                digest.update(block)
                f.write(block)
        sha = digest.hexdigest()
        tmp_blob.rename(work / "repo" / "blobs" / sha)
        server = subprocess.Popen(
            [sys.executable, "-m", "blackhole_sync_http", str(work / "repo"), "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        base = server.stdout.readline().strip()
        url = f"{base}/blobs/{sha}"
        out = str(work / "out")
        print(f"blob: {args.size_mib} MiB at {url}")

        plugin_runs = [_run_client(url, sha, str(size), out, "0", "-") for _ in range(3)]
        best = min(plugin_runs, key=lambda r: r["elapsed"])
        plugin_mbps = size / best["elapsed"] / 1e6
        peak_rss = max(r["maxrss"] for r in plugin_runs)
        print(f"plugin client: {plugin_mbps:.0f} MB/s (best of 3, sha256 verified)")
        print(f"plugin client peak RSS: {peak_rss / MIB:.1f} MiB (target < 61 MiB = 64 MB)")

        curl_mbps: float | None = None
        ratio: float | None = None
        curl = shutil.which("curl")
        if curl is None:
            print("curl: not installed, comparison skipped")
        else:
            times = []
            for _ in range(3):
                start = time.perf_counter()
                subprocess.run([curl, "-s", "-o", out, url], check=True)
                times.append(time.perf_counter() - start)
            curl_mbps = size / min(times) / 1e6
            ratio = plugin_mbps / curl_mbps
            print(f"curl -o: {curl_mbps:.0f} MB/s (best of 3); ratio {ratio:.2f}x (target >= 0.7)")

        limited = _run_client(url, sha, str(size), out, str(RATE), "-")
        achieved = limited["bytes"] / limited["elapsed"]
        error = abs(achieved - RATE) / RATE
        print(
            f"50 MB/s limit over {limited['elapsed']:.2f} s: {achieved / 1e6:.2f} MB/s "
            f"({error * 100:.1f}% off; target within 10%)"
        )

        resumed = _run_client(url, sha, str(size), out, "0", str(size // 2))
        resent = resumed["network_bytes"] - size
        print(
            f"cut at 50% and resumed: {resent} bytes re-sent "
            f"({resent / size * 100:.3f}% of the blob; target < 1%)"
        )
        print(
            json.dumps(
                {
                    "blob_bytes": size,
                    "plugin_MBps": round(plugin_mbps, 1),
                    "curl_MBps": None if curl_mbps is None else round(curl_mbps, 1),
                    "ratio_vs_curl": None if ratio is None else round(ratio, 3),
                    "rate_limit_MBps": RATE / 1e6,
                    "rate_achieved_MBps": round(achieved / 1e6, 3),
                    "rate_error_pct": round(error * 100, 2),
                    "client_peak_rss_MB": round(peak_rss / 1e6, 1),
                    "resume_resent_bytes": resent,
                    "resume_resent_pct": round(resent / size * 100, 4),
                }
            )
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
            if server.stdout is not None:
                server.stdout.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
