"""Hands every checkpoint the broker signs to the sandboxes, which witness it (see sandbox.ledgers.checkpoint_witness).

The sandboxes run on the owner's side, out of the broker operator's reach: once one has witnessed
a checkpoint, deleting that checkpoint from the log's database and cutting or rewriting the
records it covered no longer goes unnoticed (``dsbroker audit reconcile`` checks the log against
every witnessed head). This runs in a thread of its own, so a slow or absent sandbox never holds
up the log: a checkpoint it missed is sent again with the next one (a sandbox that missed several
says how far it got, WITNESS_GAP, and is sent the ones in between from the log).

Each checkpoint goes with its RFC 6962 consistency proof from the checkpoint it names as ``prev``,
made from the log's record hashes (dsbroker.records.merkle.ConsistencyProver: the proof from one
checkpoint to the next reads only the records between them), so that the sandbox can check that the
new tree extends the one it witnessed rather than take the broker's word for it.

A sandbox that refuses a checkpoint as a fork (CHECKPOINT_FORK: it does not extend what that
sandbox witnessed) means the log was rolled back or rewritten under the broker: the broker raises
the alarm and its log refuses every access from then on.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from typing import Iterable

from dsbroker.records.checkpoints import Checkpoint
from dsbroker.records.merkle import ConsistencyProver
from dsbroker.records.access_record import GENESIS_HASH
from dsbroker.errors import DsbrokerError
from broker.query.sandbox_client import SandboxClient

log = logging.getLogger(__name__)
PAGE = 500  # checkpoints per call when a sandbox catches up
TIMEOUT_SECONDS = 10.0
SIZES_KEPT = 4096  # checkpoints whose size is kept in memory, to find the one a new checkpoint names


class CheckpointWitnesses:
    """Sends each new checkpoint to every sandbox, in a background thread."""

    def __init__(self, sandboxes: dict[str, SandboxClient], checkpoints: Callable[[], list[Checkpoint]],
                 hashes: Callable[[int, int], Iterable[str]], *, on_fork: Callable[[str], None],
                 timeout_s: float = TIMEOUT_SECONDS) -> None:
        """``sandboxes`` maps a name for the broker's log to a client; ``checkpoints`` lists the log's
        checkpoints (to send a sandbox the ones it missed); ``hashes(after, upto)`` reads the log's record
        hashes (for the consistency proofs); ``on_fork`` raises the alarm."""
        self.sandboxes = sandboxes
        self._checkpoints = checkpoints
        self._prover = ConsistencyProver(hashes)
        self._sizes: dict[str, int] = {GENESIS_HASH: 0}  # checkpoint hash -> size, to find each one's prev
        self._on_fork = on_fork
        self._timeout_s = timeout_s
        self._latest: Checkpoint | None = None
        self._sent: Checkpoint | None = None
        self._complaints: dict[str, str] = {}  # sandbox name -> the last refusal reason logged
        self._wakeup = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="checkpoint-witnesses", daemon=True)
        self._thread.start()

    def submit(self, checkpoint: Checkpoint) -> None:
        """Witness ``checkpoint`` soon (never blocks: the log's writer calls this)."""
        with self._wakeup:
            self._latest = checkpoint
            self._wakeup.notify_all()

    def close(self, timeout_s: float = TIMEOUT_SECONDS) -> None:
        """Send the newest checkpoint (the broker's last, at shutdown) within ``timeout_s``, then stop."""
        deadline = time.monotonic() + timeout_s
        with self._wakeup:
            while self._latest is not None and self._latest is not self._sent and time.monotonic() < deadline:
                self._wakeup.wait(timeout=deadline - time.monotonic())
            self._closing = True
            self._wakeup.notify_all()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()) + 1.0)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._closing and (self._latest is None or self._latest is self._sent):
                    self._wakeup.wait()
                if self._closing:
                    return
                checkpoint = self._latest
            proof = self._proof(checkpoint)
            for name, client in self.sandboxes.items():
                self._witness(name, client, checkpoint, proof)
            with self._wakeup:
                self._sent = checkpoint
                self._wakeup.notify_all()

    def _proof(self, checkpoint: Checkpoint) -> list[str]:
        """The consistency proof from the checkpoint ``checkpoint`` names as ``prev`` to it (empty when that
        one is not in the log: the sandbox then refuses what it cannot check)."""
        self._sizes[checkpoint.hash()] = checkpoint.size
        if checkpoint.prev not in self._sizes:  # signed by a peer, or before this broker started
            self._sizes.update({c.hash(): c.size for c in self._checkpoints()})
        since = self._sizes.get(checkpoint.prev)
        while len(self._sizes) > SIZES_KEPT:  # the oldest go first; the log holds them all
            self._sizes.pop(next(key for key in self._sizes if key != GENESIS_HASH))
        if since is None or since >= checkpoint.size:
            return []
        try:
            return self._prover.proof(since, checkpoint.size)
        except Exception:  # noqa: BLE001 - the log could not be read; the sandbox will say what it makes of it
            log.exception("could not make the consistency proof of the checkpoint at size %d", checkpoint.size)
            return []

    def _witness(self, name: str, client: SandboxClient, checkpoint: Checkpoint, proof: list[str]) -> None:
        try:
            try:
                client.witness([checkpoint], [proof], timeout_s=self._timeout_s)
            except DsbrokerError as error:
                if error.reason != "WITNESS_GAP":
                    raise
                since = int(error.metadata.get("witnessed_size", "0") or 0)
                missing = [c for c in self._checkpoints() if since < c.size <= checkpoint.size]
                if not missing or missing[-1].hash() != checkpoint.hash():
                    raise DsbrokerError(f"the log's checkpoints after size {since} are not all there",
                                        reason="CHECKPOINT_FORK") from None
                proofs = [self._proof(c) for c in missing]
                try:
                    for start in range(0, len(missing), PAGE):
                        client.witness(missing[start:start + PAGE], proofs[start:start + PAGE],
                                       timeout_s=self._timeout_s)
                except DsbrokerError as again:
                    if again.reason != "WITNESS_GAP":
                        raise
                    raise DsbrokerError(f"the log's checkpoints after size {since} do not follow each other",
                                        reason="CHECKPOINT_FORK") from None
            if self._complaints.pop(name, None):
                log.info("sandbox %s witnesses the access log's checkpoints again", name)
        except DsbrokerError as error:
            if error.reason == "CHECKPOINT_FORK":
                self._on_fork(f"sandbox {name} refused the checkpoint at size {checkpoint.size}: it does not extend "
                              "the checkpoints that sandbox witnessed (the log was rolled back or rewritten)")
            elif self._complaints.get(name) != error.reason:  # once per reason, not once per checkpoint
                self._complaints[name] = error.reason
                log.warning("sandbox %s did not witness the access log's checkpoint at size %d (%s): %s", name,
                            checkpoint.size, error.reason, error.message)
        except Exception:  # noqa: BLE001 - a witness's trouble must never stop the broker
            log.exception("witnessing the checkpoint at size %d with sandbox %s failed", checkpoint.size, name)
