"""trackbridge's errors: one root, :class:`TrackbridgeError`; the receiver's startup errors
under :class:`StartupError`; and those raised at the call site, shaped like MLflow's own."""

from __future__ import annotations

INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
INTERNAL_ERROR = "INTERNAL_ERROR"


class TrackbridgeError(Exception):
    """The root of trackbridge's own errors: ``except TrackbridgeError`` catches every one."""


class StartupError(TrackbridgeError):
    """The receiver cannot start (a held port or data directory, a damaged queue, a bad
    certificate...): its message says why and what to do; the CLI prints it in one line."""


class MlflowException(TrackbridgeError):
    """Invalid input, reported with MLflow's class name, error code and message.

    Attributes:
        message: The human-readable reason, worded as MLflow words it.
        error_code: MLflow's error code name, e.g. ``"INVALID_PARAMETER_VALUE"``.
    """

    def __init__(self, message: object, error_code: str = INTERNAL_ERROR) -> None:
        self.message = str(message)
        self.error_code = error_code
        super().__init__(self.message)

    @classmethod
    def invalid_parameter_value(cls, message: object) -> MlflowException:
        """Builds the exception MLflow raises for a bad argument."""
        return cls(message, INVALID_PARAMETER_VALUE)


class RestException(MlflowException):
    """A check MLflow makes on its tracking server, refused at the call site: MLflow's client
    raises these as ``RestException`` (a subclass of ``MlflowException``), its message led by
    the error code (``"INVALID_PARAMETER_VALUE: ..."``)."""

    def __init__(self, message: object, error_code: str = INTERNAL_ERROR) -> None:
        super().__init__(f"{error_code}: {message}", error_code)


class BatchRejected(TrackbridgeError, ValueError):
    """A batch that breaks the wire protocol or MLflow's rules; the receiver refuses it whole."""
