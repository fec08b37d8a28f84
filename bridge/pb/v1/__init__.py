"""Generated protobuf code: never edit by hand; run proto/generate.py."""
