"""``trackbridge bench``: the project's figures side by side with direct MLflow logging.

Not part of the receiver or the client: it drives both (receivers and load generators as
processes of their own) and is never imported by either.
"""
