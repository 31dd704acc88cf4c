"""The HTTP API over a recording controller handle: routes, token, metrics, token file, serve.

The handle here is a small fake that records what it is asked: the API is the unit under
test; the real controller is tested in tests/controller.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import TypeAdapter, ValidationError

from nfs_failover import api, control
from nfs_failover.api import MAX_HISTORY_LIMIT, build_app, read_token, serve
from nfs_failover.config import HostPort
from nfs_failover.controller.snapshot import ActionResult, VolumeState, action_result
from nfs_failover.errors import ConfigError
from nfs_failover.pacing import Deadline, Pacer
from tests.fake_controller import RecordingController, as_handle, changed, reply_to
from tests.helpers import TOKEN, free_port

UNAUTHORIZED = {"error": "a bearer token is required"}

T = TypeVar("T")


@pytest.fixture
def controller() -> RecordingController:
    return RecordingController()


@pytest.fixture
def app(controller: RecordingController) -> FastAPI:
    return build_app(as_handle(controller), TOKEN)


def call(app: FastAPI, method: str, url: str, **kwargs: Any) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(send())


def post(app: FastAPI, url: str, token: str | None = TOKEN, **kwargs: Any) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return call(app, "POST", url, headers=headers, **kwargs)


# -- reads -------------------------------------------------------------------------------


def test_status_lists_every_volume_as_the_handle_reports_it(app: FastAPI) -> None:
    response = call(app, "GET", "/status")

    assert response.status_code == 200
    assert [volume["name"] for volume in response.json()] == ["crr", "tools"]
    assert response.json()[1]["state"] == "failed-over-read-only"


def test_a_volume_is_served_by_its_name(app: FastAPI) -> None:
    response = call(app, "GET", "/volumes/tools")

    assert response.status_code == 200
    assert response.json() == {
        "name": "tools",
        "mode": "read-only",
        "state": "failed-over-read-only",
        "group": None,
        "active": "az2",
        "offered": ["az2"],
        "fenced": [],
        "storage_fence": None,
        "replication": "mirrored",
        "lag_s": None,
        "health": {"az1": "down for 1m (no answer)", "az2": "up"},
        "last_action": "failover-read-only: done",
        "since": 1_700_000_100.0,
        "decision": "failed over: clients read from az2; source az1 down for 1m (no answer)",
        "preserved": [],
        "paused": True,
        "leader": "controller@ctl-a:4242",
        "store_error": None,
    }


def test_a_volume_lists_what_its_last_failback_preserved(app: FastAPI) -> None:
    response = call(app, "GET", "/volumes/crr")

    assert response.json()["preserved"] == [
        {"from": "az1", "folder": "/var/lib/p/1/old-source", "files": ["a"], "deleted": []}
    ]


def test_an_unknown_volume_is_a_404_naming_it(app: FastAPI) -> None:
    response = call(app, "GET", "/volumes/x")

    assert response.status_code == 404
    assert response.json() == {"error": "no volume 'x'"}


def test_history_passes_volume_after_and_limit_to_the_handle(
    app: FastAPI, controller: RecordingController
) -> None:
    response = call(app, "GET", "/history", params={"volume": "crr", "after": 1, "limit": 1})

    assert response.status_code == 200
    assert response.json() == [
        {
            "volume": "crr",
            "kind": "decision",
            "detail": {"action": "none", "reason": "e3"},
            "workflow": None,
            "step": "",
            "phase": "",
            "at": 1_700_000_003.0,
            "id": 3,
        }
    ]
    assert controller.history_asked == [("crr", 1, 1)]


def test_history_defaults_to_the_first_thousand_entries_of_every_volume(
    app: FastAPI, controller: RecordingController
) -> None:
    response = call(app, "GET", "/history")

    assert len(response.json()) == 6
    assert controller.history_asked == [(None, 0, 1000)]


def test_history_takes_the_maximum_limit(app: FastAPI, controller: RecordingController) -> None:
    response = call(app, "GET", "/history", params={"limit": MAX_HISTORY_LIMIT})

    assert response.status_code == 200
    assert controller.history_asked == [(None, 0, MAX_HISTORY_LIMIT)]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": MAX_HISTORY_LIMIT + 1}, "limit: input should be less than or equal to 10000"),
        ({"limit": 0}, "limit: input should be greater than or equal to 1"),
        ({"limit": "all"}, "limit: input should be a valid integer"),
        ({"after": -1}, "after: input should be greater than or equal to 0"),
        ({"after": 2**63}, "after: input should be less than or equal to 9223372036854775807"),
    ],
)
def test_history_refuses_an_invalid_limit_or_after_with_a_clear_message(
    app: FastAPI, controller: RecordingController, params: dict[str, object], message: str
) -> None:
    response = call(app, "GET", "/history", params=params)

    assert response.status_code == 422
    assert response.json()["error"].startswith(message)
    assert controller.history_asked == []


def test_status_without_the_store_answers_200_with_its_error(
    app: FastAPI, controller: RecordingController
) -> None:
    error = "etcd://127.0.0.1:2379: no member answered within 5s"
    controller.volumes = [changed(v, store_error=error, leader=None) for v in controller.volumes]

    response = call(app, "GET", "/status")

    assert response.status_code == 200
    assert [(v["store_error"], v["leader"]) for v in response.json()] == [(error, None)] * 2


def test_history_without_the_store_is_a_503_that_says_so(
    app: FastAPI, controller: RecordingController
) -> None:
    controller.store_error = "etcd://127.0.0.1:2379: no member answered within 5s"

    response = call(app, "GET", "/history")

    assert response.status_code == 503
    assert response.json() == {
        "error": "store unreachable: etcd://127.0.0.1:2379: no member answered within 5s"
    }


def test_health_is_200_while_the_decision_loop_is_alive(app: FastAPI) -> None:
    response = call(app, "GET", "/health")

    assert (response.status_code, response.json()) == (200, {"status": "alive"})


def test_health_is_503_when_the_decision_loop_is_stuck(
    app: FastAPI, controller: RecordingController
) -> None:
    controller.is_alive = False

    response = call(app, "GET", "/health")

    assert (response.status_code, response.json()) == (503, {"status": "stuck"})


def test_reads_need_no_token(app: FastAPI) -> None:
    for url in ("/status", "/volumes/crr", "/history", "/health", "/metrics", "/openapi.json"):
        assert call(app, "GET", url).status_code == 200, url


def test_the_docs_pages_are_disabled(app: FastAPI) -> None:
    for url in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        response = call(app, "GET", url)
        assert (response.status_code, response.json()) == (404, {"error": "not found"}), url


# -- the contract: response models and the fake -------------------------------------------

ROUTE_CALLS = [
    ("GET", "/status"),
    ("GET", "/volumes/crr"),
    ("GET", "/history"),
    ("POST", "/volumes/crr/failover"),
    ("POST", "/volumes/crr/failback"),
    ("POST", "/volumes/crr/switchover"),
    ("POST", "/volumes/crr/abort"),
    ("POST", "/pause"),
    ("POST", "/resume?volume=crr"),
]


def response_model(app: FastAPI, method: str, path: str) -> Any:
    """The response model the app declares for ``method path``."""
    for route in app.routes:
        if not isinstance(route, APIRoute) or method not in (route.methods or ()):
            continue
        if route.path_regex.match(path.partition("?")[0]):
            assert route.response_model is not None, path
            return route.response_model
    raise AssertionError(f"no route for {method} {path}")


@pytest.mark.parametrize(("method", "url"), ROUTE_CALLS)
def test_the_fakes_replies_validate_against_the_real_response_models(
    app: FastAPI, method: str, url: str
) -> None:
    response = post(app, url) if method == "POST" else call(app, method, url)

    assert response.status_code == 200, response.text
    model = TypeAdapter(response_model(app, method, url))
    assert model.dump_python(model.validate_json(response.content), mode="json") == (
        response.json()
    )


def test_the_states_the_fake_uses_are_volume_states(
    app: FastAPI, controller: RecordingController
) -> None:
    served = [volume["state"] for volume in call(app, "GET", "/status").json()]
    known = {state.value for state in VolumeState}

    assert set(served) <= known
    assert all(isinstance(v.state, VolumeState) for v in controller.status())
    assert all(isinstance(m.state, VolumeState) for m in controller.metrics_state())


@pytest.mark.parametrize(
    "wrong",
    [
        {"state": "healthy"},
        {"state": "degraded"},
        {"state": "failed_over"},
        {"result": "done"},
    ],
)
def test_a_fake_reply_the_controller_would_not_send_is_refused(
    controller: RecordingController, wrong: dict[str, object]
) -> None:
    with pytest.raises(ValidationError):
        changed(controller.volumes[0], **wrong)
    with pytest.raises(ValidationError):
        action_result.validate_python({**reply_to("failover", "crr").model_dump(), **wrong})


def test_a_handle_reply_of_the_wrong_kind_is_an_internal_error_not_sent(
    app: FastAPI, controller: RecordingController
) -> None:
    async def pause_instead(
        action: str, volume: str | None, *, force: bool = False
    ) -> ActionResult:
        return reply_to("pause", volume)

    controller.request = pause_instead  # type: ignore[method-assign]

    async def send() -> httpx.Response:
        # The app answers 500, then re-raises for the server to log (as uvicorn does).
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            return await client.post("/volumes/crr/failover", headers=headers)

    response = asyncio.run(send())

    assert (response.status_code, response.json()) == (
        500,
        {"error": "internal error; the controller's log has the details"},
    )


def test_openapi_describes_every_reply_from_the_snapshot_models(app: FastAPI) -> None:
    response = call(app, "GET", "/openapi.json")

    assert response.status_code == 200
    schema = response.json()
    models = schema["components"]["schemas"]
    assert {
        "VolumeStatus",
        "PreservedCopy",
        "JournalEntry",
        "WorkflowResult",
        "AbortResult",
        "PauseResult",
        "HealthReply",
        "ErrorReply",
    } <= set(models)
    assert models["VolumeState"]["enum"] == [state.value for state in VolumeState]
    # The schema names exactly the keys sent, in their order.
    volume = call(app, "GET", "/volumes/crr").json()
    assert list(models["VolumeStatus"]["properties"]) == list(volume)
    assert list(models["PreservedCopy"]["properties"]) == list(volume["preserved"][0])
    failover = schema["paths"]["/volumes/{name}/failover"]["post"]["responses"]
    assert failover["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/WorkflowResult"
    }
    assert failover["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorReply"
    }
    assert "HTTPValidationError" not in models  # 422s are {"error": ...} too


# -- actions and the token ---------------------------------------------------------------

ACTION_URLS = [
    "/volumes/crr/failover",
    "/volumes/crr/failback",
    "/volumes/crr/switchover",
    "/pause",
    "/resume?volume=crr",
]


@pytest.mark.parametrize("url", ACTION_URLS)
def test_an_action_without_a_token_is_refused_and_not_run(
    app: FastAPI, controller: RecordingController, url: str
) -> None:
    response = post(app, url, token=None, json={"force": True})

    assert (response.status_code, response.json()) == (401, UNAUTHORIZED)
    assert response.headers["www-authenticate"] == "Bearer"
    assert controller.requests == []


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer ",
        f"Basic {TOKEN}",
        TOKEN,
        f"Bearer {TOKEN.upper()}",
        "Bearer \xe9".encode("latin-1"),
        "Bearer s3cret-token-\xff".encode("latin-1"),
    ],
)
def test_an_action_with_a_wrong_token_is_refused_with_the_same_message(
    app: FastAPI, controller: RecordingController, authorization: str | bytes
) -> None:
    response = call(app, "POST", "/volumes/crr/failover", headers={"Authorization": authorization})

    assert (response.status_code, response.json()) == (401, UNAUTHORIZED)
    assert TOKEN not in response.text
    assert controller.requests == []


def test_an_unauthenticated_request_learns_nothing_about_routes_or_bodies(
    app: FastAPI, controller: RecordingController
) -> None:
    for url, body in [("/volumes/crr/failover", b"{not json"), ("/no/such/route", b"")]:
        response = post(app, url, token=None, content=body)
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED), url
    assert controller.requests == []


def test_a_failover_with_the_token_runs_on_the_handle_and_returns_its_result(
    app: FastAPI, controller: RecordingController
) -> None:
    response = post(app, "/volumes/crr/failover")

    assert response.status_code == 200
    assert response.json() == {
        "action": "failover",
        "volume": "crr",
        "workflow": 1,
        "status": "done",
        "group": None,
        "members": [],
        "note": None,
    }
    assert controller.requests == [("failover", "crr", False)]
    assert TOKEN not in response.text


def test_the_bearer_scheme_is_accepted_in_any_case(
    app: FastAPI, controller: RecordingController
) -> None:
    response = call(
        app, "POST", "/volumes/crr/failover", headers={"Authorization": f"bearer  {TOKEN}"}
    )

    assert response.status_code == 200
    assert controller.requests == [("failover", "crr", False)]


@pytest.mark.parametrize(("body", "force"), [({"force": True}, True), ({"force": False}, False)])
def test_a_failover_passes_force_from_its_body_to_the_handle(
    app: FastAPI, controller: RecordingController, body: dict[str, bool], force: bool
) -> None:
    response = post(app, "/volumes/crr/failover", json=body)

    assert response.status_code == 200
    assert controller.requests == [("failover", "crr", force)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"force": "yes"}, "force: input should be a valid boolean"),
        ({"force": 1}, "force: input should be a valid boolean"),
        ({"forse": True}, "forse: extra inputs are not permitted"),
    ],
)
def test_a_failover_body_that_is_not_as_documented_is_a_422(
    app: FastAPI, controller: RecordingController, body: dict[str, object], message: str
) -> None:
    response = post(app, "/volumes/crr/failover", json=body)

    assert (response.status_code, response.json()) == (422, {"error": message})
    assert controller.requests == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{force", "body: not valid JSON"),
        (b"[true]", 'body: expected a JSON object such as {"force": true}'),
        (b'"force"', 'body: expected a JSON object such as {"force": true}'),
    ],
)
def test_a_failover_body_that_is_not_a_json_object_is_a_422(
    app: FastAPI, controller: RecordingController, content: bytes, message: str
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    response = call(app, "POST", "/volumes/crr/failover", content=content, headers=headers)

    assert (response.status_code, response.json()) == (422, {"error": message})
    assert controller.requests == []


@pytest.mark.parametrize("action", ["failback", "switchover"])
def test_failback_and_switchover_run_on_their_volume(
    app: FastAPI, controller: RecordingController, action: str
) -> None:
    response = post(app, f"/volumes/tools/{action}")

    assert response.status_code == 200
    assert response.json()["action"] == action
    assert controller.requests == [(action, "tools", False)]


@pytest.mark.parametrize("action", ["pause", "resume"])
@pytest.mark.parametrize("volume", [None, "tools"])
def test_pause_and_resume_apply_to_every_volume_or_to_the_one_named(
    app: FastAPI, controller: RecordingController, action: str, volume: str | None
) -> None:
    params = {} if volume is None else {"volume": volume}

    response = post(app, f"/{action}", params=params)

    assert response.status_code == 200
    assert response.json() == {"action": action, "volume": volume or "*", "done": True}
    assert controller.requests == [(action, volume, False)]


@pytest.mark.parametrize(
    "url",
    ["/volumes/x/failover", "/volumes/x/failback", "/volumes/x/switchover", "/pause?volume=x"],
)
def test_an_action_on_an_unknown_volume_is_a_404_and_not_run(
    app: FastAPI, controller: RecordingController, url: str
) -> None:
    response = post(app, url)

    assert (response.status_code, response.json()) == (404, {"error": "no volume 'x'"})
    assert controller.requests == []


def test_a_refused_action_is_a_409_with_the_handles_reason(
    app: FastAPI, controller: RecordingController
) -> None:
    controller.refusal = "no failover: lag 31m exceeds max_lag 20m"

    response = post(app, "/volumes/crr/failover")

    assert response.status_code == 409
    assert response.json() == {"error": "no failover: lag 31m exceeds max_lag 20m"}
    assert controller.requests == [("failover", "crr", False)]


def test_an_action_whose_request_goes_away_still_runs_to_its_end(
    app: FastAPI, controller: RecordingController, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nfs_failover.api")
    arrived, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []
    done = "API: failover of volume 'crr' done"

    async def slow_request(action: str, volume: str | None, *, force: bool = False) -> ActionResult:
        arrived.set()
        await release.wait()
        finished.append(action)
        return reply_to(action, volume)

    controller.request = slow_request  # type: ignore[method-assign]

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            request = asyncio.create_task(client.post("/volumes/crr/failover", headers=headers))
            await asyncio.wait_for(arrived.wait(), 5)  # the action runs
            request.cancel()
            await asyncio.wait({request})
        assert request.cancelled()
        release.set()
        pacer = Pacer.every(0.01, Deadline(5.0))
        while done not in caplog.messages and await pacer.pause():
            pass

    asyncio.run(main())

    assert finished == ["failover"]
    assert done in caplog.messages


def test_gets_are_the_only_open_method(app: FastAPI, controller: RecordingController) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        response = call(app, method, "/volumes/crr/failover")
        assert (response.status_code, response.json()) == (401, UNAUTHORIZED), method
    assert controller.requests == []


# -- metrics -----------------------------------------------------------------------------


def scrape(app: FastAPI) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of one scrape: (name, sorted labels) -> value."""
    response = call(app, "GET", "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_carry_the_state_of_each_volume_as_one_and_zeros(app: FastAPI) -> None:
    samples = scrape(app)

    for volume, current in [("crr", "normal"), ("tools", "failed-over-read-only")]:
        for state in VolumeState:
            labels = (("state", state), ("volume", volume))
            expected = 1.0 if state == current else 0.0
            assert samples[("nfs_failover_volume_state", labels)] == expected, (volume, state)


def test_metrics_carry_lag_and_failovers_and_omit_an_unknown_lag(app: FastAPI) -> None:
    samples = scrape(app)

    assert samples[("nfs_failover_replication_lag_seconds", (("volume", "crr"),))] == 42.5
    assert ("nfs_failover_replication_lag_seconds", (("volume", "tools"),)) not in samples
    assert samples[("nfs_failover_failovers_total", (("volume", "crr"),))] == 0
    assert samples[("nfs_failover_failovers_total", (("volume", "tools"),))] == 3


def test_metrics_carry_a_latency_histogram_per_volume_and_replica(app: FastAPI) -> None:
    samples = scrape(app)

    def bucket(replica: str, le: str) -> float:
        labels = (("le", le), ("replica", replica), ("volume", "crr"))
        return samples[("nfs_failover_probe_latency_seconds_bucket", labels)]

    az1 = (("replica", "az1"), ("volume", "crr"))
    assert [bucket("az1", le) for le in ("0.001", "0.0025", "0.025", "0.25", "0.5", "+Inf")] == [
        0,
        1,
        2,
        2,
        3,
        3,
    ]
    assert samples[("nfs_failover_probe_latency_seconds_count", az1)] == 3
    assert samples[("nfs_failover_probe_latency_seconds_sum", az1)] == pytest.approx(0.322)
    assert bucket("az2", "0.005") == 1
    assert not any(
        name.startswith("nfs_failover_probe_latency") and ("volume", "tools") in labels
        for name, labels in samples
    )


def test_metrics_say_whether_the_decision_loop_is_alive(
    app: FastAPI, controller: RecordingController
) -> None:
    assert scrape(app)[("nfs_failover_controller_alive", ())] == 1
    controller.is_alive = False
    assert scrape(app)[("nfs_failover_controller_alive", ())] == 0


def test_metrics_are_read_from_the_handle_at_each_scrape(
    app: FastAPI, controller: RecordingController
) -> None:
    assert controller.scrapes == 0  # building the app does not read them
    scrape(app)
    controller.metrics[0] = changed(
        controller.metrics[0], state=VolumeState.FAILING_OVER, failovers_total=1
    )

    samples = scrape(app)

    assert controller.scrapes == 2
    crr = ("volume", "crr")
    assert samples[("nfs_failover_volume_state", (("state", "failing-over"), crr))] == 1
    assert samples[("nfs_failover_volume_state", (("state", "normal"), crr))] == 0
    assert samples[("nfs_failover_failovers_total", (("volume", "crr"),))] == 1


def test_metrics_without_the_store_say_so_and_keep_what_the_controller_knows(
    app: FastAPI, controller: RecordingController
) -> None:
    assert scrape(app)[("nfs_failover_store_up", ())] == 1
    controller.metrics = [
        changed(m, failovers_total=None, store_error="etcd://127.0.0.1:2379: no answer in 5s")
        for m in controller.metrics
    ]

    samples = scrape(app)

    assert samples[("nfs_failover_store_up", ())] == 0
    assert not any(name == "nfs_failover_failovers_total" for name, _ in samples)
    assert samples[("nfs_failover_replication_lag_seconds", (("volume", "crr"),))] == 42.5
    assert samples[("nfs_failover_controller_alive", ())] == 1


def test_metrics_use_a_registry_of_the_apps_own(controller: RecordingController) -> None:
    first, second = build_app(controller, TOKEN), build_app(controller, TOKEN)

    assert scrape(first) == scrape(second)
    assert REGISTRY.get_sample_value("nfs_failover_controller_alive") is None


# -- the token file ----------------------------------------------------------------------


def token_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_a_token_file_readable_by_its_owner_only_is_accepted_and_stripped(
    tmp_path: Path,
) -> None:
    assert read_token(token_file(tmp_path, f"  {TOKEN}\n".encode())) == TOKEN


def test_a_missing_token_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "absent"

    with pytest.raises(ConfigError) as caught:
        read_token(path)

    assert caught.value.problems == [
        f"{path}: cannot read the API token file: no such file or directory"
    ]


@pytest.mark.parametrize("content", [b"", b" \n\t\n"])
def test_an_empty_token_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = token_file(tmp_path, content)

    with pytest.raises(ConfigError) as caught:
        read_token(path)

    assert caught.value.problems == [
        f"{path}: the API token file is empty; write a token into it, such as the output of:"
        " openssl rand -hex 32"
    ]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_token_file_that_group_or_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = token_file(tmp_path, TOKEN.encode(), mode)

    with pytest.raises(ConfigError) as caught:
        read_token(path)

    assert caught.value.problems == [
        f"{path}: the API token file is accessible by group or others (mode {mode:04o});"
        f" refusing it: chmod 600 {path}"
    ]


def test_a_directory_is_not_a_token_file(tmp_path: Path) -> None:
    path = tmp_path / "dir"
    path.mkdir(mode=0o700)

    with pytest.raises(ConfigError, match="is not a regular file"):
        read_token(path)


@pytest.mark.parametrize("content", [b"secret words", b"secr\xc3\xa9t", b"secret\nsecret"])
def test_a_token_that_cannot_travel_in_a_header_is_refused_without_showing_it(
    tmp_path: Path, content: bytes
) -> None:
    path = token_file(tmp_path, content)

    with pytest.raises(ConfigError) as caught:
        read_token(path)

    assert "(content not shown)" in str(caught.value)
    assert "secr" not in str(caught.value).replace(str(path), "")


def test_an_oversized_token_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="larger than 4096 bytes"):
        read_token(token_file(tmp_path, b"x" * 5000))


# -- serve -------------------------------------------------------------------------------


async def until_answered(url: str, deadline: float) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        while True:
            try:
                return await client.get(url, timeout=1.0)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


def run_serving(
    app: FastAPI, listen: HostPort, while_serving: Callable[[], Awaitable[T]]
) -> tuple[T, float]:
    """Serve, run ``while_serving``, set the stop event: its result and the stop time."""

    async def main() -> tuple[T, float]:
        stop = asyncio.Event()
        server = asyncio.create_task(serve(app, listen, stop))
        try:
            result = await while_serving()
        finally:
            stop.set()
            stopped_at = time.monotonic()
            await asyncio.wait_for(server, timeout=10)
        return result, time.monotonic() - stopped_at

    return asyncio.run(main())


def test_serve_answers_over_real_http_and_stops_when_told(app: FastAPI) -> None:
    listen = HostPort("127.0.0.1", free_port())

    async def health_and_status() -> tuple[httpx.Response, httpx.Response]:
        health = await until_answered(f"http://{listen}/health", time.monotonic() + 5)
        async with httpx.AsyncClient() as client:
            refused = await client.post(f"http://{listen}/pause")
        return health, refused

    (health, refused), stop_seconds = run_serving(app, listen, health_and_status)

    assert (health.status_code, health.json()) == (200, {"status": "alive"})
    assert (refused.status_code, refused.json()) == (401, UNAUTHORIZED)
    assert "server" not in refused.headers
    assert stop_seconds < 3
    with socket.socket() as sock:  # the port is free again
        sock.bind(("127.0.0.1", listen.port))


def test_serve_stops_within_its_bounded_wait_while_an_action_hangs(
    app: FastAPI, controller: RecordingController, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.server, "SHUTDOWN_GRACE_SECONDS", 1)
    monkeypatch.setattr(api.server, "SHUTDOWN_WAIT_SECONDS", 2.0)
    listen = HostPort("127.0.0.1", free_port())

    arrived = asyncio.Event()

    async def hang(action: str, volume: str | None, *, force: bool = False) -> ActionResult:
        arrived.set()
        await asyncio.Event().wait()
        return reply_to(action, volume)

    controller.request = hang  # type: ignore[method-assign]

    async def main() -> tuple[float, object]:
        stop = asyncio.Event()
        server = asyncio.create_task(serve(app, listen, stop))
        await until_answered(f"http://{listen}/health", time.monotonic() + 5)
        async with httpx.AsyncClient() as client:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            action = asyncio.create_task(client.post(f"http://{listen}/pause", headers=headers))
            await asyncio.wait_for(arrived.wait(), 5)  # the action hangs in the controller
            stop.set()
            stopped_at = time.monotonic()
            await asyncio.wait_for(server, timeout=10)
            elapsed = time.monotonic() - stopped_at
            await asyncio.wait({action}, timeout=5)
        return elapsed, action.exception() or action.result()

    stop_seconds, client_saw = asyncio.run(main())

    assert stop_seconds < 3.5
    # The request is cut off (its action goes on in the controller), not left hanging.
    assert isinstance(client_saw, httpx.TransportError) or (
        isinstance(client_saw, httpx.Response) and client_saw.status_code == 500
    )


def test_serve_leaves_the_process_signal_handlers_alone(app: FastAPI) -> None:
    listen = HostPort("127.0.0.1", free_port())

    def handlers() -> tuple[object, object]:
        return signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    async def main() -> tuple[object, object, object]:
        before = handlers()  # asyncio.run has installed its own SIGINT handler by now
        stop = asyncio.Event()
        server = asyncio.create_task(serve(app, listen, stop))
        await until_answered(f"http://{listen}/health", time.monotonic() + 5)
        during = handlers()
        stop.set()
        await asyncio.wait_for(server, timeout=10)
        return before, during, handlers()

    before, during, after = asyncio.run(main())

    assert during == before
    assert after == before


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.13.5", "::"])
def test_serve_refuses_a_non_loopback_address(app: FastAPI, host: str) -> None:
    listen = HostPort(host, 8741)

    with pytest.raises(ConfigError) as caught:
        asyncio.run(serve(app, listen, asyncio.Event()))

    assert caught.value.problems == [
        f"api.listen: {listen} is not a loopback address; the API speaks plain HTTP, so it"
        " listens on loopback only unless remote access is allowed explicitly"
    ]


def test_serve_reports_an_address_already_in_use(app: FastAPI) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = HostPort("127.0.0.1", taken.getsockname()[1])

        with pytest.raises(ConfigError) as caught:
            asyncio.run(serve(app, listen, asyncio.Event()))

    assert caught.value.problems == [
        f"api.listen: cannot listen on {listen}: address already in use"
    ]


# -- limits: bodies, slow clients, the control socket --------------------------------------


def test_a_body_over_the_limit_is_refused_before_the_token_is_looked_at(app: FastAPI) -> None:
    big = b"x" * (api.MAX_BODY_BYTES + 1)
    response = post(app, "/volumes/crr/failover", token=None, content=big)
    assert response.status_code == 413
    assert response.json() == {"error": f"the body is limited to {api.MAX_BODY_BYTES} bytes"}


def test_a_streamed_body_over_the_limit_is_refused(
    app: FastAPI, controller: RecordingController
) -> None:
    async def chunks() -> Any:
        for _ in range(3):
            yield b" " * api.MAX_BODY_BYTES

    response = post(app, "/volumes/crr/failover", content=chunks())
    assert response.status_code == 413
    assert controller.requests == []


def test_a_client_that_never_finishes_its_request_head_is_disconnected(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.server, "HEADER_SECONDS", 0.5)
    listen = HostPort("127.0.0.1", free_port())

    async def slow_client() -> tuple[bytes, float]:
        await until_answered(f"http://{listen}/health", time.monotonic() + 5)
        reader, writer = await asyncio.open_connection(listen.host, listen.port)
        writer.write(b"GET /status HTTP/1.1\r\nHost: api\r\n")  # and never the end
        await writer.drain()
        started = time.monotonic()
        got = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
        return got, time.monotonic() - started

    (got, seconds), _ = run_serving(app, listen, slow_client)
    assert got == b""  # closed without an answer
    assert seconds < 3


def test_the_api_is_also_served_on_the_control_socket_and_removes_it_after(
    app: FastAPI, tmp_path: Path
) -> None:
    listen = HostPort("127.0.0.1", free_port())
    path = tmp_path / "run" / "api.sock"

    async def main() -> tuple[object, int]:
        stop = asyncio.Event()
        server = asyncio.create_task(serve(app, listen, stop, control_socket=path))
        try:
            await until_answered(f"http://{listen}/health", time.monotonic() + 5)
            mode = path.stat().st_mode & 0o777
            answer = await asyncio.to_thread(control.request, path, "GET", "/health")
            return answer, mode
        finally:
            stop.set()
            await asyncio.wait_for(server, timeout=10)

    answer, mode = asyncio.run(main())
    assert answer == {"status": "alive"}
    assert mode == 0o600 and (path.parent.stat().st_mode & 0o777) == 0o700
    assert not path.exists()


def test_an_action_on_a_group_is_passed_to_the_handle_by_the_groups_name(
    app: FastAPI, controller: RecordingController
) -> None:
    controller.volumes[0] = controller.volumes[0].model_copy(update={"group": "app"})

    response = post(app, "/volumes/app/failover")

    assert response.status_code == 200
    assert controller.requests == [("failover", "app", False)]
