"""A receiver on its own event-loop thread, for embedding (the demo, benchmarks, tests)."""

from __future__ import annotations

import asyncio
import threading

from server.config import ReceiverConfig
from server.receiver import Receiver


class BackgroundReceiver:
    """A receiver on its own event-loop thread, for embedding (the demo, tests)."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.receiver = Receiver(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="trackbridge-receiver", daemon=True
        )

    def start(self) -> int:
        """Starts serving; returns the bound port."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self.receiver.start(), self._loop)
        return future.result(timeout=60)

    def stop(self) -> bool:
        """Drains and stops; returns whether everything reached MLflow."""
        future = asyncio.run_coroutine_threadsafe(self.receiver.stop(), self._loop)
        try:
            return future.result(timeout=self.receiver.config.shutdown_timeout_s + 30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
