"""A secure sum across the sandboxes that hold partitions of one dataset.

Round one sends the plan to every partition; each runs it, applies its own threshold and returns only
the groups it releases, in clear. The broker takes their union, in a fixed order (by the keys' wire
values), as the slot layout.
Round two asks every partition to encrypt its cells over that layout (0 where it holds no such
group), and the broker adds the ciphertexts slot by slot. The broker sees group keys and
ciphertexts, never a cell of any partition nor the total; only the requester decrypts the total.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Callable, TypeVar

from dsbroker.errors import DsbrokerError, PartitionError
from broker.query.sandbox_client import SandboxClient
from dsbroker.results.bfv import SerialisedSum
from dsbroker.results.table import table_like, wire_keys
from dsbroker.v1 import results_pb2
from sandbox.v1 import sandbox_service_pb2 as pb

T = TypeVar("T")


class SecureSum:
    """Fans a plan out to the partitions a policy names and adds their encrypted cells."""

    def __init__(self, sandboxes: dict[str, SandboxClient], *, workers: int = 16) -> None:
        """``sandboxes`` maps each partition's sandbox id to a client of it."""
        self.sandboxes = sandboxes
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="partition")

    def execute(self, plan: pb.Plan, partitions: tuple[str, ...], *, max_groups: int, timeout_s: float,
                request_id: str) -> pb.ExecutePlanResponse:
        """Run ``plan`` in every partition and return one response whose ``encrypted`` adds them all up."""
        unknown = [name for name in partitions if name not in self.sandboxes]
        if unknown:
            raise PartitionError(f"the broker has no address for partition {unknown[0]!r}; its operator adds it to "
                                 "the partitions setting", reason="PARTITION_NOT_CONFIGURED", policy=plan.policy_id)
        deadline = time.monotonic() + timeout_s
        firsts = self._each(partitions, lambda client: client.execute(
            plan, timeout_s=deadline - time.monotonic(), request_id=request_id))
        for name, response in zip(partitions, firsts, strict=True):
            if response.sandbox_id != name or not response.HasField("partition_groups"):
                raise PartitionError(f"the sandbox configured as partition {name!r} answered as another sandbox",
                                     reason="PARTITION_MISCONFIGURED", policy=plan.policy_id)
        columns = [[(c.name, c.type) for c in response.partition_groups.columns] for response in firsts]
        if any(layout != columns[0] for layout in columns):
            raise PartitionError("the partitions' results have different key columns", policy=plan.policy_id)
        truncated = any(response.truncated for response in firsts)
        try:
            union = sorted({key for response in firsts for key in wire_keys(response.partition_groups)}, key=_order)
        except ValueError:
            raise PartitionError("a partition's groups are malformed", policy=plan.policy_id) from None
        if truncated or len(union) > max_groups:
            raise DsbrokerError(f"the partitions hold more than {max_groups} groups together; group more coarsely",
                                reason="ENCRYPTED_TOO_MANY_GROUPS", table=plan.dataset)
        groups = table_like(firsts[0].partition_groups, union)
        encrypted = self._encrypted_sum(plan, partitions, groups, deadline=deadline, request_id=request_id)
        encrypted.groups.CopyFrom(groups)
        return pb.ExecutePlanResponse(
            encrypted=encrypted, truncated=False, sandbox_id=",".join(partitions),
            engine_micros=max(response.engine_micros for response in firsts))

    def _encrypted_sum(self, plan: pb.Plan, partitions: tuple[str, ...], groups: results_pb2.ResultTable, *,
                       deadline: float, request_id: str) -> results_pb2.EncryptedTable:
        """Round two: every partition's cells encrypted over ``groups``, added up as each arrives (while the
        others still encrypt theirs); the first failure in partition order is raised, as in round one, before a
        partition whose cells do not add up."""
        futures = [self._pool.submit(lambda client: client.encrypt_partition(
            plan.execution_id, groups, timeout_s=deadline - time.monotonic(), request_id=request_id).encrypted,
            self.sandboxes[name]) for name in partitions]
        summed = EncryptedSum(plan.policy_id)
        mismatch: PartitionError | None = None
        for future in concurrent.futures.as_completed(futures):
            if future.exception() is not None:
                for ordered in futures:
                    ordered.result()
            if mismatch is None:
                try:
                    summed.add(future.result())
                except PartitionError as error:
                    mismatch = error
        if mismatch is not None:
            raise mismatch
        return summed.total()

    def _each(self, partitions: tuple[str, ...], call: Callable[[SandboxClient], T]) -> list[T]:
        """``call`` on every partition at once; the first failure (in partition order) is raised."""
        futures = [self._pool.submit(call, self.sandboxes[name]) for name in partitions]
        return [future.result() for future in futures]

    def close(self) -> None:
        """Close every partition's channel."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for client in self.sandboxes.values():
            client.close()


def _add(tables: list[results_pb2.EncryptedTable], policy_id: str) -> results_pb2.EncryptedTable:
    """The slot-wise sum of the partitions' encrypted tables (each over the same groups and columns)."""
    summed = EncryptedSum(policy_id)
    for table in tables:
        summed.add(table)
    return summed.total()


class EncryptedSum:
    """The partitions' encrypted tables added up slot by slot, one at a time in any order (BFV addition is exact,
    so the order changes no ciphertext); each must be over the same key and columns as the first added."""

    def __init__(self, policy_id: str) -> None:
        self.policy_id = policy_id
        self._first: results_pb2.EncryptedTable | None = None
        self._layout: list[tuple] = []
        self._count = 0
        self._withheld = SerialisedSum()
        self._sums: dict[tuple[int, str], SerialisedSum] = {}

    def add(self, table: results_pb2.EncryptedTable) -> None:
        """Add one partition's table; PartitionError when it does not match the first or does not load."""
        layout = _layout(table)
        if self._first is None:
            self._first, self._layout = table, layout
        elif table.key_id != self._first.key_id:
            raise PartitionError("the partitions encrypted under different keys", policy=self.policy_id)
        elif layout != self._layout:
            raise PartitionError("the partitions' encrypted columns differ", policy=self.policy_id)
        first = self._first
        try:
            if first.partitions_withheld:
                self._withheld.add(table.partitions_withheld)
            for index, column in enumerate(first.columns):
                if column.ciphertext:
                    self._sums.setdefault((index, "ciphertext"), SerialisedSum()).add(table.columns[index].ciphertext)
                if column.count_ciphertext:
                    self._sums.setdefault((index, "count_ciphertext"), SerialisedSum()).add(
                        table.columns[index].count_ciphertext)
        except ValueError:
            raise PartitionError("a partition's ciphertext does not load or is of another length",
                                 policy=self.policy_id) from None
        self._count += 1

    def total(self) -> results_pb2.EncryptedTable:
        """The sum of every table added (at least one)."""
        first = self._first
        if first is None:
            raise PartitionError("no partition answered", policy=self.policy_id)
        total = results_pb2.EncryptedTable(key_id=first.key_id, partitions=self._count)
        if first.partitions_withheld:
            total.partitions_withheld = self._withheld.serialise()
        for index, column in enumerate(first.columns):
            added = total.columns.add(name=column.name, position=column.position, kind=column.kind)
            if column.ciphertext:
                added.ciphertext = self._sums[(index, "ciphertext")].serialise()
            if column.count_ciphertext:
                added.count_ciphertext = self._sums[(index, "count_ciphertext")].serialise()
        return total


def _layout(table: results_pb2.EncryptedTable) -> list[tuple]:
    return [(c.name, c.position, c.kind, bool(c.ciphertext), bool(c.count_ciphertext)) for c in table.columns]


def _order(key: tuple) -> tuple:
    # A fixed order all partitions share: by wire value (text sorts as text), NULL last; the values of
    # one column share a type.
    return tuple((value is None, 0 if value is None else value) for value in key)
