"""Regenerates bridge/pb from proto/ with the pinned grpcio-tools (see .ci/constraints.txt).

Usage: python proto/generate.py [OUTPUT_ROOT]   (default: the repository root)
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
SERVICE_FILES = {  # only these declare a service and get *_pb2_grpc.py
    "ingest.proto",
    "watch.proto",
    "artifacts.proto",
    "tracking.proto",
}


def generate(output_root: Path) -> list[Path]:
    """Writes *_pb2.py, *.pyi and *_pb2_grpc.py for every .proto under proto/."""
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    for proto in protos:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={output_root}",
            f"--pyi_out={output_root}",
        ]
        if proto.name in SERVICE_FILES:
            args.append(f"--grpc_python_out={output_root}")
        if protoc.main([*args, str(proto)]) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
    return protos


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT.parent
    for p in generate(out):
        print("generated", p.relative_to(PROTO_ROOT))
