"""Tests that need the real data sets skip on a developer machine without them, and fail under CI=true."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def _run_without_data(tmp_path, ci: str | None):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["RTOOLKIT_TEST_DATA"] = str(tmp_path / "no-data-here")
    if ci is not None:
        env["CI"] = ci
    test = (
        "tests/test_tokenizer.py::test_special_token_layout"  # needs real books through the tokenizer fixture
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_missing_data_skips_with_the_reason_on_a_developer_machine(tmp_path):
    done = _run_without_data(tmp_path, ci=None)
    assert done.returncode == 0 and "1 skipped" in done.stdout
    assert "real data not available" in done.stdout and "no-data-here" in done.stdout


def test_missing_data_fails_loudly_under_ci(tmp_path):
    done = _run_without_data(tmp_path, ci="true")
    assert done.returncode != 0 and "CI must run the real-data tests" in done.stdout
