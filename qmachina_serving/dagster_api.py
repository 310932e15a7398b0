"""The Dagster webserver's GraphQL API over HTTP, as the jobs API uses it (no Dagster import here: the serving
process keeps streaming when Dagster is down, and the jobs routes then answer 503).

A job is one run of the code location's `experiment_job` (qmachina_assets/defs/research_jobs), queued by the
instance's run coordinator, so the tag concurrency limits of `dagster_home/dagster.yaml` apply. Cancel is
`terminateRun`; resume is `launchRunReexecution` FROM_FAILURE (a new run; the succeeded steps' outputs are
reused). Progress comes from the sweep's own `sets_done`/`sets_total` observations in the run's event log.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
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
class RunEvent:
    """One event of a run's log the jobs API cares about."""

    kind: str  # progress | step_failure | run_failure | run_success | run_canceled | engine
    message: str
    timestamp: float
    data: dict[str, Any]


LAUNCH = """
mutation Launch($p: ExecutionParams!) {
  launchRun(executionParams: $p) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on RunConflict { message }
    ... on UnauthorizedError { message }
    ... on ConflictingExecutionParamsError { message }
    ... on PresetNotFoundError { message }
    ... on NoModeProvidedError { message }
  }
}"""

REEXECUTE = """
mutation Reexecute($p: ReexecutionParams) {
  launchRunReexecution(reexecutionParams: $p) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on RunConflict { message }
    ... on UnauthorizedError { message }
    ... on ConflictingExecutionParamsError { message }
    ... on PresetNotFoundError { message }
    ... on NoModeProvidedError { message }
  }
}"""

RUN = """
query Run($id: ID!) {
  runOrError(runId: $id) {
    __typename
    ... on Run { runId status startTime endTime parentRunId tags { key value } }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}"""

TERMINATE = """
mutation Terminate($id: String!) {
  terminateRun(runId: $id) {
    __typename
    ... on TerminateRunSuccess { run { runId } }
    ... on TerminateRunFailure { message }
    ... on RunNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
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
          metadataEntries {
            label
            ... on IntMetadataEntry { intValue }
            ... on TextMetadataEntry { text }
          }
        }
        ... on ExecutionStepFailureEvent {
          error { message }
          failureMetadata { metadataEntries { label ... on TextMetadataEntry { text } } }
        }
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

    def launch_run(self, job: str, run_config: dict[str, Any], *, tags: dict[str, str]) -> str:
        """Launch `job` of the code location (queued by the instance's run coordinator); returns the run id."""
        params = {
            "selector": {"repositoryLocationName": self.location, "repositoryName": "__repository__",
                         "jobName": job},
            "runConfigData": run_config,
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in sorted(tags.items())]},
        }
        res = self._post(LAUNCH, {"p": params})["launchRun"]
        return str(self._result(_flatten(res), "LaunchRunSuccess")["run"]["runId"])

    def reexecute(self, run_id: str, *, strategy: str = "FROM_FAILURE") -> str:
        """A new run re-executing `run_id` (FROM_FAILURE: only the failed and not-run steps; the outputs of the
        succeeded ones are reused); the parent's tags are kept. Returns the new run id."""
        res = self._post(REEXECUTE, {"p": {"parentRunId": run_id, "strategy": strategy}})["launchRunReexecution"]
        return str(self._result(_flatten(res), "LaunchRunSuccess")["run"]["runId"])

    def run(self, run_id: str) -> RunInfo:
        res = self._post(RUN, {"id": run_id})["runOrError"]
        self._result(res, "Run")
        tags = {t["key"]: t["value"] for t in res.get("tags") or []}
        return RunInfo(run_id=res["runId"], status=res["status"], partition=tags.get("dagster/partition"),
                       start_time=res.get("startTime"), end_time=res.get("endTime"))

    def terminate(self, run_id: str) -> None:
        """Terminate a run (a queued one is canceled at once; a started one gets SIGTERM, then is marked)."""
        self._result(self._post(TERMINATE, {"id": run_id})["terminateRun"], "TerminateRunSuccess")

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


def _flatten(res: dict[str, Any]) -> dict[str, Any]:
    """A config validation error's messages as its `message`."""
    if res.get("__typename") == "RunConfigValidationInvalid":
        return {**res, "message": "; ".join(e.get("message", "") for e in res.get("errors") or [])}
    return res


def _event(e: dict[str, Any]) -> RunEvent | None:
    t = e.get("__typename")
    ts = float(e.get("timestamp") or 0) / 1000.0
    if t == "ObservationEvent":
        meta = {m["label"]: m.get("intValue", m.get("text")) for m in e.get("metadataEntries") or []}
        if "sets_done" in meta and "sets_total" in meta:
            data = {"done": meta["sets_done"], "total": meta["sets_total"], "eta_s": meta.get("eta_s"),
                    "asset": "/".join(e["assetKey"]["path"])}
            if meta.get("run_ids"):
                data["run_ids"] = json.loads(meta["run_ids"])
            return RunEvent("progress", e.get("message") or "", ts, data)
        return None
    if t == "ExecutionStepFailureEvent":
        meta = {m["label"]: m.get("text") for m in (e.get("failureMetadata") or {}).get("metadataEntries") or []}
        return RunEvent("step_failure", (e.get("error") or {}).get("message") or e.get("message") or "", ts,
                        {"step": e.get("stepKey"), "reason": meta.get("reason")})
    if t == "RunFailureEvent":
        return RunEvent("run_failure", (e.get("error") or {}).get("message") or e.get("message") or "", ts, {})
    if t == "RunSuccessEvent":
        return RunEvent("run_success", e.get("message") or "", ts, {})
    if t == "RunCanceledEvent":
        return RunEvent("run_canceled", e.get("message") or "", ts, {})
    if t == "RunStartEvent":
        return RunEvent("run_start", e.get("message") or "", ts, {})
    return None
