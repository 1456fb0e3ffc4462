"""Re-embedding stored images with the current pack (CompreFace's ``POST /api/v1/migrate``).

Runs in a background thread; while it runs, face writes answer 405 code 32 as CompreFace's do.
Faces whose image was not kept cannot be re-embedded and stay on their old pack (counted as failed).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from faceatlas.api.state import ServerState

log = logging.getLogger("faceatlas.api.migration")


@dataclass
class Migration:
    state: ServerState
    running: bool = False
    migrated: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self, *, everything: bool = False) -> bool:
        """Start a run; False when one is already running."""
        with self._lock:
            if self.running:
                return False
            self.running = True
            self.migrated = self.failed = 0
            self._thread = threading.Thread(
                target=self._run, args=(everything,), name="faceatlas-migrate", daemon=True
            )
            self._thread.start()
            return True

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, everything: bool) -> None:
        state = self.state
        pack = state.engine.pack.id
        touched: set[int] = set()
        try:
            for service_id, face_id in state.store.faces_to_migrate(pack, everything=everything):
                image = state.store.get_image(service_id, face_id)
                faces = []
                if image is not None:
                    try:
                        faces = state.engine.analyze(image, limit=1)
                    except Exception as exc:  # one bad image must not stop the run
                        log.warning("migration: face %s: %s", face_id, exc)
                if not faces or faces[0].embedding is None:
                    self.failed += 1
                    continue
                state.store.set_embedding(service_id, face_id, faces[0].embedding, pack)
                touched.add(service_id)
                self.migrated += 1
            for service_id in touched:
                state.collections.after_write(service_id)
            log.info("Migration successfully finished: %d re-embedded, %d failed", self.migrated, self.failed)
        except Exception:
            log.exception("migration failed")
        finally:
            self.running = False
