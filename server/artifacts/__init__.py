"""Artifacts apart from the event stream: the Artifacts gRPC service (checksummed chunks), the
staging store on disk, and the uploader that puts staged files in MLflow.
"""
