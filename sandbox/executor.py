"""One plan, end to end in the sandbox: its checks, the execution ledger, the engine, disclosure control.

The plan comes from a broker that may be broken or hostile, so nothing it says is taken on trust: the
dataset is one served here, the policy is signed by keys the owner trusts and stands, every field is in
range, the guard run again for the caller the identity provider vouches for gives exactly this plan, and an
encrypted plan's key is the one its caller bound to the query. Only then is the plan recorded (durably,
once per execution id) and run; what leaves is what :mod:`sandbox.disclosure` releases.
"""

from __future__ import annotations

import hashlib
import time

from dsbroker.errors import DsbrokerError
from dsbroker.guard import GuardedQuery
from dsbroker.guard.split_cells import MOST_CELLS
from dsbroker.observability.call_facts import logged_grant, note_call
from dsbroker.observability.metrics import ServerMetrics, outcome_of
from dsbroker.policy.model import Policy
from dsbroker.results.bfv import PublicContexts, RequesterKey
from dsbroker.results.noise_report import noise_report
from dsbroker.results.table import encode_table
from sandbox.checks.key import check_key_binding
from sandbox.checks.lookups import LookupChecker
from sandbox.checks.plan import CheckedPlan, PlanGuardChecker
from sandbox.checks.plan_fields import check_plan_fields
from sandbox.checks.policy import PlanPolicyChecker
from sandbox.audit.auditor import Auditor
from sandbox.disclosure.encryption import PendingPartitions, check_domain, encrypt, encrypted_release, noisy_release
from sandbox.disclosure.noise import noisy_answer
from sandbox.disclosure.release import audited_release, check_committed, check_protectable, check_size, engine_cap
from sandbox.disclosure.two_levels import run_two_levels
from sandbox.engine.interface import Engine, EngineResult
from sandbox.ledgers.executions import ExecutionLedger
from sandbox.ledgers.privacy import PrivacyLedger
from sandbox.v1 import sandbox_service_pb2 as pb

DEADLINE_MARGIN_SECONDS = 0.05


class PlanExecutor:
    """Checks, records, runs and releases the plans of the datasets this sandbox serves."""

    def __init__(self, engine: Engine, datasets: set[str], *, policies: PlanPolicyChecker, plans: PlanGuardChecker,
                 lookups: LookupChecker, max_rows: int, max_execution_seconds: float, executions: ExecutionLedger,
                 ledger: PrivacyLedger | None, data_version: str, auditor: Auditor | None = None,
                 metrics: ServerMetrics | None = None) -> None:
        """``metrics`` counts plans by decision, the cells withheld by rule, and times the checks, the engine and
        disclosure control (the server's; by default a registry of the executor's own)."""
        self.engine = engine
        self.metrics = metrics or ServerMetrics("sandbox")
        self.datasets = datasets
        self.policies = policies
        self.plans = plans
        self.lookups = lookups
        self.max_rows = max_rows
        self.max_execution_seconds = max_execution_seconds
        self.executions = executions
        self.ledger = ledger
        self.data_version = data_version
        self.auditor = auditor
        self.contexts = PublicContexts()
        self.pending = PendingPartitions()

    def execute(self, plan: pb.Plan, *, deadline: float, request_id: str) -> pb.ExecutePlanResponse:
        """Check ``plan`` as if the broker were hostile, record it, run it and release what disclosure control
        allows. ``deadline`` is the caller's, on ``time.monotonic``'s clock: each step gets what is left of it,
        and a plan whose deadline passes during its checks is refused before it is recorded."""
        note_call(grant=logged_grant(plan.policy_id))  # as the broker names it, until checked
        try:
            response = self._execute(plan, deadline=deadline, request_id=request_id)
        except BaseException as error:
            decision, reason = outcome_of(error)
            self.metrics.query(decision, reason)
            note_call(decision=decision)
            raise
        self.metrics.query("released")
        note_call(decision="released")
        self.metrics.cells_withheld({"dominance": response.cells_withheld,
                                     "min_entities": response.threshold_cells_withheld,
                                     "secondary": response.secondary_cells_withheld,
                                     "audit": response.audit_cells_withheld})
        if response.engine_micros:  # none for a noisy answer given again from the ledger
            self.metrics.stage("engine", response.engine_micros / 1e6)
        return response

    def _checked(self, plan: pb.Plan, *, deadline: float) -> tuple[CheckedPlan, Policy]:
        """The plan checked against everything the sandbox holds, and its policy; DsbrokerError when refused."""
        if plan.dataset not in self.datasets:
            raise DsbrokerError(f"this sandbox does not serve dataset {plan.dataset!r}",
                                reason="DATASET_NOT_SERVED", table=plan.dataset)
        policy = self.policies.check(plan)
        check_plan_fields(plan)  # every field in range before the guard reads it and the ledger records it
        checked = self.plans.check(plan, policy, deadline=deadline)
        note_call(caller=checked.caller.subject, department=checked.caller.department, grant=policy.id)
        self.lookups.check(policy, checked.guarded.lookups)  # served, with its key and columns, the key unique
        return checked, policy

    def _execute(self, plan: pb.Plan, *, deadline: float, request_id: str) -> pb.ExecutePlanResponse:
        with self.metrics.timed("recheck"):
            checked, policy = self._checked(plan, deadline=deadline)
        guarded = checked.guarded
        max_rows = min(plan.max_rows, guarded.max_rows, self.max_rows)
        timeout = min(self.max_execution_seconds, deadline - time.monotonic() - DEADLINE_MARGIN_SECONDS)
        run_deadline = time.monotonic() + timeout  # the engine's and then the release's
        if timeout <= 0:
            raise DsbrokerError("the deadline passed before the query could start", reason="QUERY_TIMEOUT")
        key: RequesterKey | None = None
        if guarded.encrypted:  # checked before the plan is recorded: a plan refused here never runs
            key = self.contexts.load(plan.encryption.public_context)
            check_key_binding(plan, key.key_id, checked)
            if policy.partitions and self.executions.sandbox_id not in policy.partitions:
                raise DsbrokerError("this sandbox is not one of the policy's partitions", reason="PARTITION_NOT_NAMED",
                                    policy=policy.id)
        self.executions.record(plan, request_id=request_id)
        if guarded.outer is not None:  # the guard answers two levels in plaintext, without noise, alone
            return self._two_levels(plan, guarded, max_rows=max_rows, deadline=run_deadline)
        if guarded.noise is not None:
            response = self._noisy(plan, policy, guarded, max_rows=max_rows, timeout=timeout)
            if key is not None:
                # The noise is drawn in clear here and the noisy cells encrypted: the same as adding the
                # noise to the encrypted cells, and the stored answer serves both modes alike.
                keys = {i for i, output in enumerate(guarded.noise.outputs) if output.kind == "key"}
                cells = noisy_release(response.table, keys, dataset=plan.dataset)
                response.encrypted.CopyFrom(encrypt(cells, key.context, key.key_id))
                response.ClearField("table")
            return response
        if key is not None:
            # One row past the cap: the released groups come first, so whether there are more of them than
            # the cap holds is told by them alone, never by a small group that takes the last place.
            result = self.engine.execute(plan.sql, timeout_s=timeout, max_rows=max_rows + 1)
            return self._encrypted(plan, policy, guarded, result, key, max_rows=max_rows, deadline=run_deadline)
        check_protectable(guarded, audited=self.auditor is not None)
        result = self.engine.execute(plan.sql, timeout_s=timeout, max_rows=engine_cap(guarded, max_rows))
        check_size(guarded, result.truncated, dataset=plan.dataset)
        released = self._release(result, guarded, max_rows=max_rows, deadline=run_deadline)
        truncated = released.truncated or (result.truncated and not guarded.cells.whole_table)
        return pb.ExecutePlanResponse(
            table=encode_table(released.names, released.types, released.rows, withheld=released.withheld,
                               rolled_up=released.rolled_up),
            truncated=truncated, engine_micros=result.micros, cells_withheld=released.counts["dominance"],
            threshold_cells_withheld=released.counts["min_entities"],
            secondary_cells_withheld=released.counts["secondary"], audit_cells_withheld=released.counts["audit"],
            audited=self.auditor is not None, sandbox_id=self.executions.sandbox_id)

    def _two_levels(self, plan: pb.Plan, guarded: GuardedQuery, *, max_rows: int,
                    deadline: float) -> pb.ExecutePlanResponse:
        """Each protected aggregate run and released as a one-level answer (audited: every cell of it that leaves
        disclosure control is recorded), then the outer query on those released tables and nothing else."""
        answer = run_two_levels(
            self.engine, guarded, max_rows=max_rows, deadline=deadline,
            release_part=lambda result, part: self._release(result, part, max_rows=max_rows, deadline=deadline))
        return pb.ExecutePlanResponse(
            table=encode_table(answer.names, answer.types, answer.rows, withheld=answer.withheld),
            truncated=answer.truncated, engine_micros=answer.micros, cells_withheld=answer.counts["dominance"],
            threshold_cells_withheld=answer.counts["min_entities"],
            secondary_cells_withheld=answer.counts["secondary"], audit_cells_withheld=answer.counts["audit"],
            audited=self.auditor is not None, sandbox_id=self.executions.sandbox_id)

    def _release(self, result: EngineResult, guarded: GuardedQuery, *, max_rows: int, deadline: float):
        """Disclosure control on the engine's cells, the released-cell auditor included (unless the owner turned it
        off, audit_released_cells = false)."""
        with self.metrics.timed("disclosure"):
            return audited_release(result.names, result.types, result.rows, guarded, max_rows=max_rows,
                                   deadline=deadline, auditor=self.auditor)

    def _encrypted(self, plan: pb.Plan, policy: Policy, guarded: GuardedQuery, result: EngineResult,
                   key: RequesterKey, *, max_rows: int, deadline: float) -> pb.ExecutePlanResponse:
        """Release ``result`` encrypted; under partitions release its groups and keep the cells for round two."""
        with self.metrics.timed("disclosure"):
            if policy.partitions or self.auditor is None:
                # Under partitions each sandbox holds a part of every cell, so none of them can audit the sums the
                # requester decrypts (README: what the auditor does not do).
                release = encrypted_release(result.names, result.types, result.rows, guarded,
                                            partitions=max(len(policy.partitions), 1), dataset=plan.dataset,
                                            max_rows=max_rows)
            else:
                auditor = self.auditor
                with auditor.lock(guarded.dataset):
                    session = auditor.session(guarded, deadline=deadline)
                    release = encrypted_release(result.names, result.types, result.rows, guarded, partitions=1,
                                                dataset=plan.dataset, max_rows=max_rows, audit=session)
                    check_committed(session)
        response = pb.ExecutePlanResponse(truncated=release.truncated, engine_micros=result.micros,
                                          sandbox_id=self.executions.sandbox_id,
                                          audited=self.auditor is not None and not policy.partitions)
        if policy.partitions:
            self.pending.put(plan.execution_id, release, key.context, key.key_id)
            response.partition_groups.CopyFrom(release.groups)
        else:
            response.encrypted.CopyFrom(encrypt(release, key.context, key.key_id))
        return response

    def encrypt_partition(self, request: pb.EncryptPartitionRequest) -> pb.EncryptPartitionResponse:
        """Round two of a secure sum: this partition's cells of ``request.execution_id``, encrypted over the
        groups every partition released."""
        pending = self.pending.take(request.execution_id)
        domain = check_domain(pending.release, request.groups)
        return pb.EncryptPartitionResponse(
            encrypted=encrypt(pending.release, pending.context, pending.key_id, domain=domain),
            sandbox_id=self.executions.sandbox_id)

    def _noisy(self, plan: pb.Plan, policy: Policy, guarded: GuardedQuery, *, max_rows: int,
               timeout: float) -> pb.ExecutePlanResponse:
        """Answer under the policy's noise: the stored answer to the same plan, or a new one paid from the grant's
        share of the dataset's budget."""
        noise = policy.noise
        if self.ledger is None or noise is None:
            raise DsbrokerError("this sandbox keeps no privacy ledger, so it answers no noise policy",
                                reason="NOISE_NOT_SERVED", policy=policy.id)
        # The plan (order, limit, names) is part of the key: it is applied after the noise, outside the SQL.
        plan_key = hashlib.sha256("\n".join((self.data_version, guarded.sql, repr(guarded.noise), str(max_rows)))
                                  .encode()).hexdigest()

        def compute() -> bytes:
            # Every cell must reach the noisy threshold, small ones included, so the engine's result is not
            # cut at the grant's cap; a table of more cells than any report needs is refused, and the refusal
            # spends the budget like an answer (whether it happens depends on the data).
            cap = MOST_CELLS
            result = self.engine.execute(plan.sql, timeout_s=timeout, max_rows=cap)
            if result.truncated:
                raise DsbrokerError(f"the query has more than {cap:,} cells before the noisy threshold; group more "
                                    "coarsely", reason="NOISE_TOO_MANY_CELLS", table=plan.dataset)
            with self.metrics.timed("disclosure"):
                answer = noisy_answer(guarded.noise, noise, policy.min_entities, result.names, result.types,
                                      result.rows, max_rows=max_rows)
            report = noise_report(noise, answer.calibration, ((c.name, c.scale, c.half_width) for c in answer.columns))
            return pb.ExecutePlanResponse(
                table=encode_table(answer.names, answer.types, answer.rows), truncated=answer.truncated,
                engine_micros=result.micros, noise=report).SerializeToString(deterministic=True)

        stored = self.ledger.answer(policy_id=policy.id, dataset=plan.dataset, plan_key=plan_key,
                                    epsilon=noise.epsilon, budget=noise.budget, compute=compute)
        response = pb.ExecutePlanResponse.FromString(stored.answer)
        if stored.repeated:
            response.noise.epsilon_spent = 0
            response.noise.repeated_answer = True
            response.engine_micros = 0
        response.noise.epsilon_total_spent = stored.spent
        response.noise.epsilon_budget = noise.budget
        # The dataset's figures too: a grant with share left can still be refused once the others spent it.
        response.noise.dataset_epsilon_spent = stored.dataset_spent
        response.noise.dataset_epsilon_budget = stored.dataset_budget
        response.sandbox_id = self.executions.sandbox_id
        return response

