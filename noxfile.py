"""Development sessions. `nox -s tests` is what CI runs (through .ci/run).

`tests` gates CI: the type check (mypy), the layer check (lint-imports), then every test of the
core and the plugins in parallel (pytest-xdist; tests marked ``xdist_group("net")`` share one
worker, so network tests never run side by side), a short run of every fuzz target included.
Test timeouts stop hangs and are scaled by ``BLACKHOLE_SYNC_TEST_TIMEOUT_SCALE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
PLUGINS = sorted(p.parent for p in (ROOT / "blackhole_sync_plugins").glob("*/pyproject.toml"))
#: atheris 3.0.0 is the last release with a cp311 manylinux wheel (3.1.0 has none).
FUZZ_DEPS = ["atheris==3.0.0"]
TEST_DEPS = [
    # pytest 9.2 keeps a node's id in ``_id``: pytest-xdist 3.8's ``--dist loadgroup`` still
    # writes ``_nodeid``, so every ``xdist_group`` is silently ignored and the network tests
    # run side by side (blackhole_sync.testing.pytest_plugin refuses such a run).
    "pytest>=8,<9.2",
    "pytest-timeout>=2.3",
    "pytest-xdist>=3.5",
    "hypothesis>=6.100",
    "trio>=0.25",
    "zstandard>=0.22",
    # the PKCS#11 signer plugin of tests/test_pkcs11_signer.py (SoftHSM2: .ci/run)
    "python-pkcs11>=0.7",
    # tests/test_docs_build.py builds the documentation (it skipped in CI without it)
    "sphinx>=7",
    *FUZZ_DEPS,
]
CHECK_DEPS = ["mypy>=1.10", "types-psutil", "import-linter>=2.0"]
#: pytest-xdist: a worker per core, all network tests ("net" group) in one of them (--dist
#: loadgroup). One worker more than cores was 13% faster on 2 cores but starved the embedded
#: IPFS nodes' fetches into timeouts.
PARALLEL = ["-n", "auto", "--dist", "loadgroup"]


#: Extras a plugin is installed with (the IPFS plugin's embedded Kubo: no IPFS test may skip).
PLUGIN_EXTRAS = {"ipfs": "[embedded]"}


def install_project(session: nox.Session, *extra: str) -> None:
    plugins = [f"{p}{PLUGIN_EXTRAS.get(p.name, '')}" for p in PLUGINS]
    session.install("-e", ".", *[arg for p in plugins for arg in ("-e", p)], *extra)


def test_paths() -> list[str]:
    return ["tests", *[str(p / "tests") for p in PLUGINS if (p / "tests").is_dir()]]


def run_checks(session: nox.Session) -> None:
    """mypy and lint-imports: they gate CI with the tests."""
    session.run("mypy")
    session.run("lint-imports")


@nox.session
def tests(session: nox.Session) -> None:
    """mypy, lint-imports, then every test of the core and of every plugin folder, in
    parallel (the long soak runs excluded; a short run of every fuzz target included)."""
    install_project(session, *TEST_DEPS, *CHECK_DEPS)
    run_checks(session)
    session.run("pytest", *PARALLEL, "-m", "not slow", *test_paths(), *session.posargs)


@nox.session
def stress(session: nox.Session) -> None:
    """The test session beside a CPU burner on every core (not in CI): the suite must pass on
    a busy machine. The burners start before the tests and are stopped whatever happens."""
    install_project(session, *TEST_DEPS, *CHECK_DEPS)
    cores = os.cpu_count() or 1
    burners = [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(cores)
    ]
    session.log(f"{cores} CPU burner(s) running: pids {[b.pid for b in burners]}")
    try:
        run_checks(session)
        session.run("pytest", *PARALLEL, "-m", "not slow", *test_paths(), *session.posargs)
    finally:
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait()
        session.log("CPU burners stopped")


@nox.session
def fuzz(session: nox.Session) -> None:
    """Every fuzz target in fuzz/ for long: ``nox -s fuzz -- [SECONDS] [TARGET...]``
    (default 600 s each). Corpora grow in fuzz/corpus/<target>/; a crash is written to
    fuzz/crashes/ and stops the session: fix it, and add the input to
    fuzz/regressions/<target>/ with a test that stages it."""
    install_project(session, *FUZZ_DEPS)
    args = list(session.posargs)
    seconds = int(args.pop(0)) if args and args[0].isdigit() else 600
    targets = args or sorted(
        p.stem.removeprefix("fuzz_") for p in (ROOT / "fuzz").glob("fuzz_*.py")
    )
    crashes = ROOT / "fuzz" / "crashes"
    crashes.mkdir(exist_ok=True)
    for target in targets:
        corpus = ROOT / "fuzz" / "corpus" / target
        corpus.mkdir(parents=True, exist_ok=True)
        regressions = ROOT / "fuzz" / "regressions" / target
        session.run(
            "python",
            str(ROOT / "fuzz" / f"fuzz_{target}.py"),
            f"-max_total_time={seconds}",
            "-timeout=60",
            f"-artifact_prefix={crashes}{os.sep}",
            str(corpus),
            *([str(regressions)] if regressions.is_dir() else []),
        )


@nox.session
def soak(session: nox.Session) -> None:
    """Long crash-injection and fuzz runs (not in CI)."""
    install_project(session, *TEST_DEPS)
    session.run("pytest", "-m", "slow", *test_paths(), *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, and the layer contracts (import-linter)."""
    install_project(session, "ruff>=0.5", "import-linter>=2.0")
    session.run("ruff", "check", ".")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    install_project(session, *CHECK_DEPS)
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """The HTML documentation, warnings as errors (tests/test_docs_build.py builds it too)."""
    install_project(session, "sphinx>=7")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def examples(session: nox.Session) -> None:
    install_project(session, *TEST_DEPS)
    session.run("pytest", "tests/test_examples.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark report: ``bench/run.py`` runs every ``bench/bench_*.py`` (each prints its
    figures and, last, one JSON line of headline numbers) and writes the markdown table of
    those figures against their targets, with the machine it ran on, to ``docs/benchmarks.md``
    (which the documentation shows). Arguments go to ``bench/run.py``: ``nox -s bench --
    --quick``, ``--only verify`` (repeatable), ``--no-write``."""
    install_project(session, "zstandard>=0.22", "psutil>=5.9")
    session.run("python", str(ROOT / "bench" / "run.py"), *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: an origin and node agents on 127.0.0.1 (gossip, BitTorrent, IPFS)
    playing the design's story: swarm release, phased delta, halted bad release, protocol
    activation, a returning node catching up over IPFS."""
    install_project(session)
    session.run("blackhole-sync", "demo", *session.posargs)
