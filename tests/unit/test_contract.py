"""The event contract: buf lint, buf breaking against main, and generated code that is not stale."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"


@pytest.fixture(scope="module")
def buf() -> str:
    path = shutil.which("buf") or str(ROOT / ".oo/tools/node_modules/.bin/buf")
    if not Path(path).exists():
        pytest.fail("buf is not installed: run `make tools` (npm's @bufbuild/buf)")
    return path


def test_buf_lint(buf: str) -> None:
    result = subprocess.run([buf, "lint"], cwd=PROTO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_against_main(buf: str) -> None:
    has_main = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "main"], cwd=ROOT, capture_output=True
    )
    ref = "main" if has_main.returncode == 0 else "HEAD"
    result = subprocess.run(
        [buf, "breaking", "proto", "--against", f".git#ref={ref},subdir=proto"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_catches_a_renamed_field(buf: str, tmp_path: Path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    shutil.copytree(PROTO, before, ignore=shutil.ignore_patterns("*.py", "*.pyi", "__pycache__"))
    shutil.copytree(before, after)
    proto = after / "oo/events/v1/events.proto"
    proto.write_text(proto.read_text().replace("string tip_id = 1;", "string tip_ref = 1;", 1))
    result = subprocess.run(
        [buf, "breaking", str(after), "--against", str(before)], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "tip_id" in result.stdout + result.stderr


def test_generated_python_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_proto.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_stale_check_detects_a_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts/gen_proto.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    copy = tmp_path / "proto"
    shutil.copytree(PROTO, copy)
    target = copy / "oo/events/v1/events_pb2.py"
    target.write_text(target.read_text() + "\n# edited by hand\n")
    monkeypatch.setattr(gen, "PROTO_ROOT", copy)
    assert _run_check(gen, monkeypatch) == 1


def _run_check(gen: object, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "argv", ["gen_proto.py", "--check"])
    return gen.main()  # type: ignore[attr-defined]
