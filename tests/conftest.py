"""Shared fixtures: an Engine over a fresh store root that cleans up everything it made.

Under ``CI=true`` a skipped test fails, naming its skip reason: CI installs everything a test needs,
so a skip there hides a broken setup (a missing package, an unreachable service) behind a green run.
"""

from __future__ import annotations

import os

import pytest
from nbc_testing import HAS_BUSYBOX, ROOT, cleanup_engine

CI = os.environ.get("CI") == "true"
_SKIPPED_FILES = pytest.StashKey[list[str]]()


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {reason}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport:
    # A module-level skip stays a skip here (a failed collection would stop the whole run);
    # pytest_sessionfinish fails the run for it.
    report = yield
    if CI and report.skipped:
        skipped = collector.config.stash.setdefault(_SKIPPED_FILES, [])
        skipped.append(f"{report.nodeid}: {_skip_reason(report)}")
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    skipped = session.config.stash.get(_SKIPPED_FILES, [])
    if skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for line in config.stash.get(_SKIPPED_FILES, []):
        terminalreporter.write_line(f"FAILED (skipped under CI=true, where every test must run) {line}",
                                    red=True)


@pytest.fixture
def engine(tmp_path):
    from nbcontainer import Engine

    e = Engine(tmp_path / "store")
    yield e
    if ROOT:
        cleanup_engine(e, tmp_path)


@pytest.fixture
def busybox_engine(engine):
    if not HAS_BUSYBOX:
        pytest.skip("busybox-static is not installed")
    engine.bootstrap("busybox")
    return engine
