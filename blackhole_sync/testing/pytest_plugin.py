"""A pytest plugin for suites that must pass on a busy machine (``-p
blackhole_sync.testing.pytest_plugin``; the repository's pytest configuration loads it).

- pytest-timeout's limits -- the ``timeout`` ini setting and every ``@pytest.mark.timeout(N)``
  -- are multiplied by ``BLACKHOLE_SYNC_TEST_TIMEOUT_SCALE`` (:mod:`.timeouts`): a test timeout
  stops a hang, it does not measure speed.
- The ``xdist_group`` marker is registered even where pytest-xdist is not installed, so a
  suite that marks its network tests ``@pytest.mark.xdist_group("net")`` (run in one worker,
  one after another, under ``--dist loadgroup``) also runs without it.
- Under ``--dist loadgroup`` a worker refuses to run when pytest-xdist did not tag its grouped
  tests (``<id>@<group>``: the tag the scheduler groups by). A pytest release xdist does not
  follow yet (pytest 9.2 with xdist 3.8) drops the tag silently and the "one at a time"
  network tests run side by side.
"""

from __future__ import annotations

import pytest

from .timeouts import TIMEOUT_SCALE_ENV, timeout_scale

__all__ = [
    "pytest_collection_finish",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_report_header",
    "pytest_runtest_setup",
]


@pytest.hookimpl(trylast=True)  # after pytest-timeout read its settings
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "xdist_group(name): tests of one group run in one pytest-xdist worker, one at a time",
    )
    scale = timeout_scale()
    current = getattr(config, "_env_timeout", None)
    if scale != 1 and current:
        config._env_timeout = float(current) * scale  # type: ignore[attr-defined]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    scale = timeout_scale()
    if scale == 1:
        return
    for item in items:
        marker = item.get_closest_marker("timeout")
        if marker is None:
            continue
        args = list(marker.args)
        kwargs = dict(marker.kwargs)
        if args and args[0] is not None:
            args[0] = float(args[0]) * scale
        elif kwargs.get("timeout") is not None:
            kwargs["timeout"] = float(kwargs["timeout"]) * scale
        else:
            continue
        # prepended: the closest marker, the one pytest-timeout reads
        item.add_marker(pytest.mark.timeout(*args, **kwargs), append=False)


def ungrouped(items: list[pytest.Item]) -> list[str]:
    """The ids of ``items`` marked ``xdist_group`` that carry no ``@<group>`` tag."""
    return [
        item.nodeid
        for item in items
        if item.get_closest_marker("xdist_group") is not None and "@" not in item.nodeid
    ]


_UNGROUPED = pytest.StashKey[str]()


def pytest_collection_finish(session: pytest.Session) -> None:
    config = session.config
    if not hasattr(config, "workerinput") or not getattr(config.option, "loadgroup", False):
        return  # not an xdist worker under --dist loadgroup: groups mean nothing here
    missing = ungrouped(session.items)
    if missing:
        config.stash[_UNGROUPED] = (
            f"pytest-xdist did not tag {len(missing)} xdist_group test(s) with their group: "
            f"this pytest ({pytest.__version__}) and pytest-xdist do not work together, and "
            "grouped tests would run side by side. Use the versions the noxfile pins."
        )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fails each grouped test of a worker whose groups pytest-xdist ignored."""
    message = item.config.stash.get(_UNGROUPED, None)
    if message is not None and item.get_closest_marker("xdist_group") is not None:
        pytest.fail(message, pytrace=False)


def pytest_report_header(config: pytest.Config) -> str | None:
    scale = timeout_scale()
    return None if scale == 1 else f"{TIMEOUT_SCALE_ENV}={scale:g}: test timeouts scaled"
