"""Regenerate the committed Python for the event contract with grpcio-tools' protoc.

Usage: python scripts/gen_proto.py [--check]
With --check, exit 1 if the committed modules differ from what protoc generates now.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTOS = sorted(p.relative_to(PROTO_ROOT) for p in PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
    ]
    if protoc.main(args + [str(p) for p in PROTOS]) != 0:
        raise SystemExit("protoc failed")


def generated_files(base: Path) -> dict[str, bytes]:
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*_pb2.py*")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = generated_files(Path(tmp))
    if check:
        committed = generated_files(PROTO_ROOT)
        stale = sorted(
            k for k in fresh.keys() | committed.keys() if fresh.get(k) != committed.get(k)
        )
        if stale:
            print("stale generated modules (run scripts/gen_proto.py): " + ", ".join(stale))
            return 1
        return 0
    for rel, data in fresh.items():
        (PROTO_ROOT / rel).write_bytes(data)
        print(f"wrote proto/{rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
