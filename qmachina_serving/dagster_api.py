"""The Dagster webserver's GraphQL API over HTTP, as the jobs API uses it (no Dagster import here: the serving
process keeps streaming when Dagster is down, and the jobs routes then answer 503).

A job is one Dagster asset backfill (`launchPartitionBackfill` with per-asset partitions: the datasets a job
still needs and the sweep's test sessions), so Dagster's backfill daemon orders the runs by the asset graph
and its queued run coordinator applies the tag concurrency limits of `dagster_home/dagster.yaml`. Cancel is
`cancelPartitionBackfill` (its runs are terminated); resume is `reexecutePartitionBackfill` FROM_FAILURE, a new
backfill that re-runs the failed partitions only (materialized ones are reused). Progress comes from the
sweep's own `sweep_progress` observations in the run logs.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any


class DagsterUnavailable(Exception):
    """The webserver cannot be reached (or answers with a server error)."""


class DagsterError(Exception):
    """Dagster refused the request (a GraphQL error or an error result); the message is Dagster's."""


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    status: str  # QUEUED | NOT_STARTED | STARTING | STARTED | SUCCESS | FAILURE | CANCELING | CANCELED
    partition: str | None
    start_time: float | None
    end_time: float | None


@dataclass(frozen=True)
class BackfillInfo:
    backfill_id: str
    status: str  # REQUESTED | COMPLETED | FAILED | CANCELING | CANCELED | COMPLETED_SUCCESS | COMPLETED_FAILED ...
    runs: list[RunInfo] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class RunEvent:
    """One event of a run's log the jobs API cares about."""

    kind: str  # progress | step_failure | run_failure | run_success | run_canceled | engine
    message: str
    timestamp: float
    data: dict[str, Any]


LAUNCH = """
mutation Launch($p: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $p) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on PartitionSetNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on RunConflict { message }
    ... on InvalidSubsetError { message }
    ... on ConflictingExecutionParamsError { message }
    ... on NoModeProvidedError { message }
    ... on PresetNotFoundError { message }
    ... on InvalidOutputError { invalidOutputName }
  }
}"""

BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status
      error { message }
      runs { runId status startTime endTime tags { key value } }
    }
    ... on BackfillNotFoundError { message }
    ... on PythonError { message }
  }
}"""

CANCEL = """
mutation Cancel($id: String!) {
  cancelPartitionBackfill(backfillId: $id) {
    __typename
    ... on CancelBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""

RETRY = """
mutation Retry($p: ReexecutionParams) {
  reexecutePartitionBackfill(reexecutionParams: $p) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""

LOGS = """
query Logs($runId: ID!, $after: String) {
  logsForRun(runId: $runId, afterCursor: $after) {
    __typename
    ... on EventConnection {
      cursor hasMore
      events {
        __typename
        ... on MessageEvent { message timestamp level stepKey }
        ... on ObservationEvent {
          assetKey { path } partition
          metadataEntries { label ... on IntMetadataEntry { intValue } }
        }
        ... on ExecutionStepFailureEvent { error { message } }
        ... on RunFailureEvent { error { message } }
      }
    }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}"""

RELOAD = """
mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry {
      locationOrLoadError { __typename ... on PythonError { message } }
    }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
    ... on ReloadNotSupported { message }
    ... on RepositoryLocationNotFound { message }
  }
}"""

VERSION = "query { version }"


class DagsterClient:
    """GraphQL calls against `url` (the webserver root, e.g. http://127.0.0.1:3000)."""

    def __init__(self, url: str, *, location: str = "qmachina", timeout_s: float = 15.0):
        self.url = url.rstrip("/") + "/graphql"
        self.location = location
        self.timeout_s = timeout_s

    def _post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                payload = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise DagsterUnavailable(f"Dagster webserver at {self.url} answered {exc.code}") from exc
            raise DagsterError(f"Dagster webserver at {self.url} answered {exc.code}: {exc.read()[:500]!r}") from exc
        except (OSError, ValueError) as exc:  # refused, timed out, reset, not JSON
            raise DagsterUnavailable(f"Dagster webserver at {self.url} unreachable: {exc}") from exc
        if payload.get("errors"):
            raise DagsterError("; ".join(e.get("message", str(e)) for e in payload["errors"]))
        return payload["data"]

    @staticmethod
    def _result(obj: dict[str, Any], ok: str) -> dict[str, Any]:
        if obj.get("__typename") != ok:
            detail = obj.get("message") or json.dumps({k: v for k, v in obj.items() if k != "__typename"})
            raise DagsterError(f"{obj.get('__typename')}: {detail}")
        return obj

    def version(self) -> str:
        return str(self._post(VERSION)["version"])

    def reload(self) -> None:
        """Reload the code location (new config files become assets without a restart)."""
        res = self._post(RELOAD, {"name": self.location})["reloadRepositoryLocation"]
        self._result(res, "WorkspaceLocationEntry")
        err = res.get("locationOrLoadError") or {}
        if err.get("__typename") == "PythonError":
            raise DagsterError(f"code location {self.location} failed to load: {err.get('message')}")

    def launch_backfill(self, partitions_by_asset: dict[str, list[str]], *, tags: dict[str, str], title: str,
                        description: str = "") -> str:
        """An asset backfill of `{asset key: partitions}`; returns its id."""
        params = {
            "partitionsByAssets": [
                {"assetKey": {"path": [key]}, "partitions": {"ranges": [{"start": p, "end": p} for p in parts]}}
                for key, parts in partitions_by_asset.items() if parts],
            "tags": [{"key": k, "value": v} for k, v in sorted(tags.items())],
            "title": title, "description": description,
        }
        res = self._post(LAUNCH, {"p": params})["launchPartitionBackfill"]
        return str(self._result(res, "LaunchBackfillSuccess")["backfillId"])

    def backfill(self, backfill_id: str) -> BackfillInfo:
        res = self._post(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        self._result(res, "PartitionBackfill")
        runs = []
        for r in res.get("runs") or []:
            tags = {t["key"]: t["value"] for t in r.get("tags") or []}
            runs.append(RunInfo(run_id=r["runId"], status=r["status"], partition=tags.get("dagster/partition"),
                                start_time=r.get("startTime"), end_time=r.get("endTime")))
        return BackfillInfo(backfill_id=res["id"], status=res["status"], runs=runs,
                            error=(res.get("error") or {}).get("message"))

    def cancel_backfill(self, backfill_id: str) -> None:
        self._result(self._post(CANCEL, {"id": backfill_id})["cancelPartitionBackfill"], "CancelBackfillSuccess")

    def retry_backfill(self, backfill_id: str) -> str:
        """A new backfill re-running the failed partitions of `backfill_id` (FROM_FAILURE)."""
        res = self._post(RETRY, {"p": {"parentRunId": backfill_id, "strategy": "FROM_FAILURE"}})
        return str(self._result(res["reexecutePartitionBackfill"], "LaunchBackfillSuccess")["backfillId"])

    def run_events(self, run_id: str, after: str | None = None) -> tuple[list[RunEvent], str | None]:
        """The events of a run after cursor `after` that tell progress or outcome; and the new cursor."""
        out: list[RunEvent] = []
        cursor = after
        while True:
            res = self._post(LOGS, {"runId": run_id, "after": cursor})["logsForRun"]
            self._result(res, "EventConnection")
            for e in res["events"]:
                ev = _event(e)
                if ev is not None:
                    out.append(ev)
            cursor = res["cursor"]
            if not res.get("hasMore"):
                return out, cursor


def _event(e: dict[str, Any]) -> RunEvent | None:
    t = e.get("__typename")
    ts = float(e.get("timestamp") or 0) / 1000.0
    if t == "ObservationEvent":
        meta = {m["label"]: m.get("intValue") for m in e.get("metadataEntries") or []}
        if "sets_done" in meta and "sets_total" in meta:
            return RunEvent("progress", e.get("message") or "", ts,
                            {"done": meta["sets_done"], "total": meta["sets_total"],
                             "asset": "/".join(e["assetKey"]["path"]), "partition": e.get("partition")})
        return None
    if t == "ExecutionStepFailureEvent":
        return RunEvent("step_failure", (e.get("error") or {}).get("message") or e.get("message") or "", ts,
                        {"step": e.get("stepKey")})
    if t == "RunFailureEvent":
        return RunEvent("run_failure", (e.get("error") or {}).get("message") or e.get("message") or "", ts, {})
    if t == "RunSuccessEvent":
        return RunEvent("run_success", e.get("message") or "", ts, {})
    if t == "RunCanceledEvent":
        return RunEvent("run_canceled", e.get("message") or "", ts, {})
    if t == "RunStartEvent":
        return RunEvent("run_start", e.get("message") or "", ts, {})
    return None
