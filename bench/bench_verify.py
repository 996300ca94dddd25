"""Benchmark: verify a release manifest against bare pynacl verification.

Documents: a manifest with 10 artifacts and five release signatures; the release role's
threshold is 3, so a verifier needs three good signatures. The library's path is the trust
path's own order: strict parse and canonical bytes, the threshold over those bytes, then the
model. The baseline is the cryptography alone: three bare ``nacl.signing.VerifyKey.verify``
calls per document over pre-encoded bytes. The ratio says what strict parsing, canonical
re-encoding, the schema checks and key bookkeeping add. Target: at most 2.0.

Votes are measured by ``bench_consensus.py`` (the peer-message gate and the tally, target at
most 1.5 x bare pynacl); the proxy that stood here until the tally existed is gone.

Method: ROUNDS interleaved rounds (the order of the two candidates alternates from round to
round); in each round both candidates do the same work back to back, so the round's ratio
compares them under the same machine load. Reported: the median of the per-round ratios and
the median rates, never the best round. ``--clock cpu`` measures process CPU time instead of
wall time (steadier on a shared machine).

Run: ``.venv/bin/python bench/bench_verify.py [--documents N] [--rounds N]``. The
last line printed is one JSON object with the figures and the targets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import nacl.signing

from blackhole_sync.documents import (
    Envelope,
    PrivateKey,
    ReleaseManifest,
    Root,
    format_time,
    verify_backend,
)

THRESHOLD = 3
SIGNATURES = 5
ARTIFACTS = 10
TARGET_RATIO = 2.0
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def build_manifest() -> tuple[Root, bytes]:
    release_keys = [PrivateKey.generate() for _ in range(SIGNATURES)]
    other = PrivateKey.generate()
    now = dt.datetime.now(dt.UTC)
    keys = {k.keyid: k.public_key.to_dict() for k in [*release_keys, other]}
    root = Root.from_dict(
        {
            "_type": "root",
            "spec_version": "1",
            "version": 1,
            "expires": format_time(now + dt.timedelta(days=365)),
            "keys": keys,
            "roles": {
                "root": {"keyids": [other.keyid], "threshold": 1},
                "index": {"keyids": [other.keyid], "threshold": 1},
                "release": {"keyids": [k.keyid for k in release_keys], "threshold": THRESHOLD},
            },
        }
    )
    artifacts = []
    for i in range(ARTIFACTS):
        content = f"artifact {i}".encode() * 100
        artifacts.append(
            {
                "name": f"blackhole-node-{i}.tar.gz",
                "length": len(content),
                "hashes": {"sha256": hashlib.sha256(content).hexdigest()},
                "mode": 0o755,
                "platform": "linux",
                "arch": "x86_64",
                "locators": [{"kind": "url", "value": f"https://example.org/blobs/{i}"}],
            }
        )
    manifest = ReleaseManifest.from_dict(
        {
            "_type": "release",
            "spec_version": "1",
            "version": "2.4.1",
            "type": "binary",
            "channel": "stable",
            "released": format_time(now),
            "artifacts": artifacts,
            "compatibility": {"min_from_version": "2.0.0", "protocol_versions": [7, 8]},
            "health": {"argv": ["./blackhole-node", "--health"], "timeout": 30},
            "notes": "Bug fixes and performance improvements.",
        }
    )
    return root, Envelope.sign(manifest.to_dict(), release_keys).raw


def interleaved(
    library: Callable[[], object],
    baseline: Callable[[], object],
    rounds: int,
    clock: Callable[[], float],
) -> tuple[list[float], list[float]]:
    """Seconds per round for each candidate, alternating which goes first."""
    library()  # warm up
    baseline()
    lib_times: list[float] = []
    base_times: list[float] = []
    for n in range(rounds):
        order = [(library, lib_times), (baseline, base_times)]
        for fn, times in order if n % 2 == 0 else reversed(order):
            start = clock()
            fn()
            times.append(clock() - start)
    return lib_times, base_times


class Figures(NamedTuple):
    ratio: float  # median of the per-round ratios (library time / bare time)
    round_ratios: list[float]
    library_per_second: float  # from the median round time
    bare_per_second: float


def summary(lib: list[float], base: list[float], per_round: int) -> Figures:
    ratios = [t_lib / t_base for t_lib, t_base in zip(lib, base, strict=True)]
    return Figures(
        round(statistics.median(ratios), 3),
        [round(r, 3) for r in ratios],
        round(per_round / statistics.median(lib), 1),
        round(per_round / statistics.median(base), 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--documents", type=int, default=2000, help="documents per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument("--quick", action="store_true", help="500 documents")
    args = parser.parse_args()
    if args.quick:
        args.documents = 500
    clock = CLOCKS[args.clock]

    root, data = build_manifest()
    envelope = Envelope.from_bytes(data)
    signed_bytes = envelope.signed_bytes
    bare_docs = [
        (nacl.signing.VerifyKey(root.keys[s.keyid].raw), bytes.fromhex(s.sig))
        for s in envelope.signatures[:THRESHOLD]
    ]

    def documents() -> None:
        for _ in range(args.documents):
            env = Envelope.from_bytes(data, expected_type="release")
            root.verify_role(env, "release")
            env.parse(ReleaseManifest.from_dict)

    def bare_documents() -> None:
        for _ in range(args.documents):
            for key, sig in bare_docs:
                key.verify(signed_bytes, sig)

    docs = summary(
        *interleaved(documents, bare_documents, args.rounds, clock), per_round=args.documents
    )

    print(f"document: {len(data)} bytes, {ARTIFACTS} artifacts, {SIGNATURES} signatures")
    print(f"method: median of {args.rounds} interleaved rounds ({args.clock} clock)")
    print(f"library signature check: {verify_backend()}")
    print("baseline signature check: nacl.signing.VerifyKey.verify (bare pynacl)")
    print(
        f"documents ({THRESHOLD} of {SIGNATURES} signatures): "
        f"{docs.library_per_second:.0f}/s vs bare {docs.bare_per_second:.0f}/s, "
        f"ratio {docs.ratio:.2f}x (target <= {TARGET_RATIO}x), rounds {docs.round_ratios}"
    )
    print(
        json.dumps(
            {
                "benchmark": "bench_verify",
                "method": f"median of {args.rounds} interleaved rounds",
                "clock": args.clock,
                "rounds": args.rounds,
                "threshold": THRESHOLD,
                "signatures": SIGNATURES,
                "artifacts": ARTIFACTS,
                "document_bytes": len(data),
                "documents_per_round": args.documents,
                "ratio": docs.ratio,
                "round_ratios": docs.round_ratios,
                "verifications_per_second": docs.library_per_second,
                "bare_pynacl_documents_per_second": docs.bare_per_second,
                "target_ratio": TARGET_RATIO,
                "ok": docs.ratio <= TARGET_RATIO,
                "library_verify": verify_backend(),
                "baseline_verify": "nacl.signing.VerifyKey.verify",
            }
        )
    )


if __name__ == "__main__":
    main()
