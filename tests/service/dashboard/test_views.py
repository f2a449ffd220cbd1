"""The dashboard in headless Chromium and ``learnstream report``, on the data of a real run.

A short demo run (``run_demo`` of ``learnstream run`` on ``helpers.SHORT_DEMO``: 8 windows
of 256 digits, version 1 trained at window 2, group B rotated from window 3, B's labels
permuted in window 7; the session's ``short_demo`` fixture) fills a store through the
very calls the Celery tasks make (ingest, then processing of each closed window,
predictions); the HTTP API serves it with uvicorn in a thread on a free
loopback port; Chromium (Debian's package, driven by playwright: no downloaded browser)
opens ``/dashboard/demo``, checks that every picture rendered and the drift incident and
the rejected candidate are shown, acknowledges the regression alert through the page and
checks the store; a screenshot is saved to ``tests/output/dashboard.png``. Everything
runs in this process, so torch and friends are imported once.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from helpers import DEMO_TOKEN, SHORT_DEMO, demo_margins
from sqlalchemy import select
from typer.testing import CliRunner

from service.api.app import create_app
from service.cli import cli
from service.context import Service, set_service
from service.store.schema import Alert

TOKEN = DEMO_TOKEN
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parents[3] / "tests" / "output"
PLAN = SHORT_DEMO


@pytest.fixture(scope="module")
def demo(short_demo: tuple[Service, dict[str, Any]]) -> Iterator[tuple[Service, dict[str, Any]]]:
    """The session's short demo run, installed as the service the CLI uses."""
    service, summary = short_demo
    assert summary["drift_windows"] and summary["rejected_versions"], (
        f"{summary}\n{demo_margins(service)}"
    )
    set_service(service)
    yield service, summary
    set_service(None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def api_url(demo: tuple[Service, dict[str, Any]]) -> Iterator[str]:
    """The HTTP API on the demo's store: uvicorn in a thread on a free loopback port."""
    service, _ = demo
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="dashboard-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


def _alert(service: Service, alert_id: int) -> Alert:
    with service.store.session() as session:
        alert = session.scalar(select(Alert).where(Alert.id == alert_id))
        session.expunge(alert)
        return alert


def _regression_alert_id(service: Service) -> int:
    with service.store.session() as session:
        return session.scalar(select(Alert.id).where(Alert.kind == "fairness.regression"))


def test_dashboard_in_chromium(demo: tuple[Service, dict[str, Any]], api_url: str) -> None:
    assert shutil.which("chromium") or Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: install Debian's chromium (make browser) to run this test"
    )
    from playwright.sync_api import sync_playwright

    service, summary = demo
    rejected = summary["rejected_versions"][0]
    regression = _regression_alert_id(service)
    assert regression is not None, f"no fairness.regression alert\n{demo_margins(service)}"
    assert not _alert(service, regression).acknowledged

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            failed: list[str] = []
            page.on("requestfailed", lambda request: failed.append(request.url))
            response = page.goto(f"{api_url}/dashboard/demo", wait_until="load")
            assert response is not None and response.status == 200

            for section in ("summary", "alerts", "drift", "accuracy", "versions", "gate",
                            "incidents", "explanations"):  # fmt: skip
                assert page.locator(f"#{section}").count() == 1, section
            images = page.evaluate(
                "() => [...document.images].map(i => [i.complete, i.naturalWidth, i.alt])"
            )
            assert len(images) >= 3 + 8 + 3 * 4, images  # figures, thumbnails, Grad-CAM maps
            broken = [alt for complete, width, alt in images if not complete or width == 0]
            assert not broken, broken
            assert failed == []
            for figure in ("drift-figure", "accuracy-figure", "gate-figure"):
                assert page.locator(f"#{figure}").evaluate("i => i.naturalWidth") > 300

            version_row = page.locator(f"#version-{rejected}")
            assert "rejected" in version_row.get_attribute("class")
            assert "rejected" in version_row.inner_text()
            assert page.locator(f"#version-{summary['champion']}").inner_text().count("★") == 1
            row = page.locator(f"#alert-{regression}")
            assert "fairness.regression" in row.inner_text()
            assert f"v{rejected}" in row.inner_text()
            incidents = page.locator("#incidents .incident")
            assert incidents.count() >= 1
            assert incidents.first.locator(".thumbs img").count() >= 1
            explanations = page.locator("#explanations").inner_text()
            assert f"v{rejected} rejected" in explanations and "drift" in explanations
            assert page.locator("#explanations table.cams").count() >= 2

            # A wrong token kept from earlier: the API says why, the token is forgotten.
            page.evaluate("() => sessionStorage.setItem('learnstream.operatorToken', 'wrong')")
            row.locator("button.ack").click()
            page.wait_for_function(
                f"() => document.getElementById('ack-error-{regression}').textContent !== ''"
            )
            assert "wrong operator token" in page.locator(f"#ack-error-{regression}").inner_text()
            assert not _alert(service, regression).acknowledged

            # Now the page asks for the token once and acknowledges.
            prompts: list[str] = []

            def answer(dialog: Any) -> None:
                prompts.append(dialog.message)
                dialog.accept(TOKEN)

            page.on("dialog", answer)
            open_before = int(page.locator("#open-alert-count").inner_text())
            row.locator("button.ack").click()
            page.wait_for_selector(f"#alert-{regression}.acked")
            assert "acknowledged by dashboard" in row.inner_text()
            assert int(page.locator("#open-alert-count").inner_text()) == open_before - 1
            assert len(prompts) == 1 and "token" in prompts[0].lower()
            stored = _alert(service, regression)
            assert stored.acknowledged and stored.acknowledged_by == "dashboard"

            # The token is kept in this tab: the next acknowledgement asks nothing.
            other = page.locator("tr.alert-row.open button.ack").first
            other_id = int(other.get_attribute("data-alert"))
            other.click()
            page.wait_for_selector(f"#alert-{other_id}.acked")
            assert len(prompts) == 1 and _alert(service, other_id).acknowledged

            page.reload(wait_until="load")
            assert page.locator(f"#alert-{regression}").count() == 0  # now under acknowledged
            OUTPUT.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert (OUTPUT / "dashboard.png").stat().st_size > 50_000


def test_dashboard_index_and_unknown_stream(api_url: str) -> None:
    index = httpx.get(f"{api_url}/dashboard", timeout=60)
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert 'href="/dashboard?stream=demo"' in index.text
    missing = httpx.get(f"{api_url}/dashboard/nope", timeout=60)
    assert missing.status_code == 404 and "unknown stream &#39;nope&#39;" in missing.text
    assert httpx.get(f"{api_url}/dashboard?stream=demo", timeout=60).status_code == 200


def _report(*args: str) -> Any:
    """``learnstream report ...`` in this process (on the service the demo installed)."""
    return CliRunner().invoke(cli, ["report", *args])


def test_report_file_and_json(demo: tuple[Service, dict[str, Any]], tmp_path: Path) -> None:
    service, summary = demo
    out = tmp_path / "report.html"
    done = _report("demo", "--out", str(out))
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == str(out.resolve())
    html = out.read_text()
    assert "<script" not in html and "<link" not in html
    sources = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert len(sources) >= 3 + 3 * 4 and all(
        s.startswith("data:image/png;base64,") for s in sources
    )
    assert f'id="version-{summary["rejected_versions"][0]}" class="rejected"' in html

    data = _report("demo", "--json")
    assert data.exit_code == 0, data.output
    figures = json.loads(data.stdout.strip().splitlines()[-1])
    assert [w["seq"] for w in figures["windows"]] == list(range(1, PLAN.windows + 1))
    assert {w["seq"] for w in figures["windows"] if w["drifted"]} == set(summary["drift_windows"])
    assert {d["kind"] for d in figures["drift"]} == {"covariate", "label", "concept"}
    rejected = [v for v in figures["versions"] if v["status"] == "rejected"]
    assert [v["version"] for v in rejected] == summary["rejected_versions"]
    failed = {c["subject"] for c in rejected[0]["gate"]["groups"] if c["verdict"] == "fail"}
    assert "B" in failed, f"group verdicts {failed}\n{demo_margins(service)}"
    kinds = {e["kind"] for e in figures["explanations"]}
    assert kinds == {"incident", "regression"}
    maps = figures["explanations"][0]["samples"][0]["maps"]
    assert set(maps) <= {"champion", "candidate"} and len(next(iter(maps.values()))) == 14

    unknown = _report("nope")
    assert unknown.exit_code == 1
    assert unknown.stderr.strip() == "error: unknown stream 'nope'" and unknown.stdout == ""
