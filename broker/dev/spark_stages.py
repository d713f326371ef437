"""Where a Spark query's time goes, from Spark's event log (``spark.eventLog.enabled``): per SQL execution, its
stages in order with their tasks, wall time, the executors' run time (and of it the CPU time and the garbage
collector's: run time well above CPU time is a task waiting for a core), and the bytes read from the files and
written to and read from the shuffles; what is left of the execution's wall time is the driver's (planning,
scheduling, collecting the result).

The bench tags its own jobs with a description (``setJobDescription``), so each query's executions are found
by it; :func:`breakdown` gives the medians over a description's executions.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    """One stage of an execution: what its tasks did, added up."""

    stage_id: int
    name: str
    tasks: int = 0
    wall_ms: float = 0.0
    run_ms: float = 0.0
    cpu_ms: float = 0.0
    gc_ms: float = 0.0
    input_bytes: int = 0
    input_records: int = 0
    shuffle_write_bytes: int = 0
    shuffle_read_bytes: int = 0


@dataclass
class Execution:
    """One SQL execution: its wall time and its stages in the order Spark ran them."""

    execution_id: int
    description: str = ""
    wall_ms: float = 0.0
    stages: list[Stage] = field(default_factory=list)


def executions(event_log: Path) -> list[Execution]:
    """Every SQL execution in the event log file ``event_log`` that ran at least one stage."""
    found: dict[int, Execution] = {}
    started: dict[int, float] = {}
    stage_execution: dict[int, int] = {}
    stages: dict[int, Stage] = {}
    for line in event_log.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        kind = event["Event"]
        if kind.endswith("SQLExecutionStart"):
            started[event["executionId"]] = event["time"]
        elif kind.endswith("SQLExecutionEnd") and event["executionId"] in started:
            execution = found.setdefault(event["executionId"], Execution(event["executionId"]))
            execution.wall_ms = event["time"] - started[event["executionId"]]
        elif kind == "SparkListenerJobStart":
            properties = event.get("Properties", {})
            if "spark.sql.execution.id" not in properties:
                continue
            execution_id = int(properties["spark.sql.execution.id"])
            execution = found.setdefault(execution_id, Execution(execution_id))
            execution.description = properties.get("spark.job.description", execution.description)
            for stage_id in event["Stage IDs"]:
                stage_execution[stage_id] = execution_id
        elif kind == "SparkListenerTaskEnd" and event.get("Task Metrics"):
            stage = stages.setdefault(event["Stage ID"], Stage(event["Stage ID"], ""))
            metrics = event["Task Metrics"]
            stage.run_ms += metrics.get("Executor Run Time", 0)
            stage.cpu_ms += metrics.get("Executor CPU Time", 0) / 1e6  # nanoseconds
            stage.gc_ms += metrics.get("JVM GC Time", 0)
            stage.input_bytes += metrics.get("Input Metrics", {}).get("Bytes Read", 0)
            stage.input_records += metrics.get("Input Metrics", {}).get("Records Read", 0)
            stage.shuffle_write_bytes += metrics.get("Shuffle Write Metrics", {}).get("Shuffle Bytes Written", 0)
            read = metrics.get("Shuffle Read Metrics", {})
            stage.shuffle_read_bytes += read.get("Remote Bytes Read", 0) + read.get("Local Bytes Read", 0)
        elif kind == "SparkListenerStageCompleted":
            info = event["Stage Info"]
            stage = stages.setdefault(info["Stage ID"], Stage(info["Stage ID"], ""))
            stage.name = info["Stage Name"]
            stage.tasks = info["Number of Tasks"]
            if info.get("Completion Time") and info.get("Submission Time"):
                stage.wall_ms = info["Completion Time"] - info["Submission Time"]
    for stage_id, stage in sorted(stages.items()):
        if stage_id in stage_execution and stage.tasks:
            found[stage_execution[stage_id]].stages.append(stage)
    return [execution for _id, execution in sorted(found.items()) if execution.stages]


def breakdown(event_log: Path, description: str, *, skip: int = 1) -> list[str]:
    """Lines of the median wall time of the executions described ``description`` (the first ``skip`` left out:
    warm-up) and of each of their stages, position by position."""
    runs = [e for e in executions(event_log) if e.description == description][skip:]
    if not runs:
        return [f"  {description}: no executions in {event_log.name}"]
    shape = min(len(run.stages) for run in runs)
    wall = statistics.median(run.wall_ms for run in runs)
    in_stages = statistics.median(sum(stage.wall_ms for stage in run.stages) for run in runs)
    lines = [f"  {description}: {len(runs)} runs, median {wall:,.0f} ms, of which stages {in_stages:,.0f} ms and the "
             f"driver (planning, scheduling, the result) {wall - in_stages:,.0f} ms"]
    for position in range(shape):
        column = [run.stages[position] for run in runs]

        def median(attribute: str, stages: list[Stage] = column) -> float:
            return statistics.median(getattr(stage, attribute) for stage in stages)

        lines.append(f"    stage {position + 1}: {median('tasks'):3.0f} tasks, wall {median('wall_ms'):6,.0f} ms, "
                     f"tasks' run {median('run_ms'):6,.0f} ms (CPU {median('cpu_ms'):6,.0f}, GC "
                     f"{median('gc_ms'):4,.0f}), read {median('input_bytes') / 1e3:8,.0f} kB "
                     f"({median('input_records'):,.0f} rows), shuffle write "
                     f"{median('shuffle_write_bytes') / 1e3:6,.1f} kB, shuffle read "
                     f"{median('shuffle_read_bytes') / 1e3:6,.1f} kB")
    return lines


def event_log_of(directory: Path, application: str) -> Path:
    """The event log file Spark wrote into ``directory`` for ``application`` (its id), once it has stopped."""
    found = sorted(path for path in directory.iterdir() if path.is_file() and application in path.name
                   and not path.name.endswith(".inprogress"))
    if not found:
        names = sorted(path.name for path in directory.iterdir())
        raise FileNotFoundError(f"no event log of {application} in {directory}: {names}")
    return found[0]
