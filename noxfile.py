"""Development sessions. `nox -s tests` is what CI runs (through .ci/run)."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
PLUGINS = sorted(p.parent for p in (ROOT / "blackhole_sync_plugins").glob("*/pyproject.toml"))
TEST_DEPS = ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "trio>=0.25", "zstandard>=0.22"]


def install_project(session: nox.Session, *extra: str) -> None:
    session.install("-e", ".", *[arg for p in PLUGINS for arg in ("-e", str(p))], *extra)


def test_paths() -> list[str]:
    return ["tests", *[str(p / "tests") for p in PLUGINS if (p / "tests").is_dir()]]


@nox.session
def tests(session: nox.Session) -> None:
    """Every test of the core and of every plugin folder (the long soak runs excluded)."""
    install_project(session, *TEST_DEPS)
    session.run("pytest", "-m", "not slow", *test_paths(), *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Long crash-injection and fuzz runs (not in CI)."""
    install_project(session, *TEST_DEPS)
    session.run("pytest", "-m", "slow", *test_paths(), *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    install_project(session, "mypy>=1.10", "types-psutil")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    install_project(session, "sphinx>=7")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def examples(session: nox.Session) -> None:
    install_project(session, *TEST_DEPS)
    session.run("pytest", "tests/test_examples.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: each prints its figures and, last, one JSON line of headline numbers."""
    install_project(session, "zstandard>=0.22", "psutil>=5.9")
    names = session.posargs or sorted(p.name for p in (ROOT / "bench").glob("bench_*.py"))
    for name in names:
        session.run("python", str(ROOT / "bench" / name))


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: a local network of nodes updating from an origin and each other."""
    install_project(session)
    session.run("blackhole-sync", "demo", *session.posargs)
