"""The checked-in protobuf code is exactly what proto/generate.py produces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.support.procs import REPO_ROOT

GENERATED_DIR = Path("bridge") / "pb" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _load_generator() -> object:
    path = REPO_ROOT / "proto" / "generate.py"
    spec = importlib.util.spec_from_file_location("trackbridge_proto_generate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _generated(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    }


@pytest.mark.timeout(60)
def test_checked_in_protobuf_code_matches_a_fresh_generation(tmp_path: Path) -> None:
    generator = _load_generator()
    protos = generator.generate(tmp_path)  # type: ignore[attr-defined]
    assert protos, "no .proto files were found"

    fresh = _generated(tmp_path)
    assert fresh, "the generator wrote nothing"
    # every .proto yields its _pb2.py and .pyi
    for proto in protos:
        stem = proto.relative_to(REPO_ROOT / "proto").with_suffix("").as_posix()
        assert f"{stem}_pb2.py" in fresh
        assert f"{stem}_pb2.pyi" in fresh

    checked_in = {
        f"{GENERATED_DIR.as_posix()}/{path}": data
        for path, data in _generated(REPO_ROOT / GENERATED_DIR).items()
    }
    assert sorted(fresh) == sorted(checked_in), "generated files and checked-in files differ"
    for path, data in fresh.items():
        assert checked_in[path] == data, f"{path} differs from a fresh generation"
