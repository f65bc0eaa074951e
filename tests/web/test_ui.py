"""The auditor's web UI in headless Chromium, against `immutrail serve` over a real history.

The history is the audit tests' world (two images built, scanned, checked, tested, signed and
approved through the CLI; v1 promoted and deployed, a drift report; v2 refused, then promoted by
a break-glass override and deployed; a chaos kill, a heal, a failed rollout), plus principals with
tokens and one instance whose recorded fields are hostile HTML.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from access.conftest import ADMIN, add_principal, login, role_environments
from api.conftest import Servers
from audit.conftest import World, world  # noqa: F401 - the module's history
from immutrail.access import NewPrincipal, Role, bootstrap, create_token
from immutrail.audit.verify import verify_bundle
from immutrail.ledger.event import Event
from immutrail.ledger.home import open_ledger
from immutrail.web.chain import STAGES

from .conftest import new_page

HOSTILE = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
HOSTILE_INSTANCE = "local-<svg onload=window.__xss=3>"
ALL_STAGES = {stage for stage, _ in STAGES}


@dataclass
class Site:
    url: str
    world: World
    tokens: dict[str, str]
    """auditor, reviewer, builder, expired."""
    expires: datetime
    """When the ``expiring`` token stops working."""
    hostile_index: int


def _hostile_events(world: World) -> int:
    """An instance in prod whose service, reason and drift finding are hostile HTML."""
    with open_ledger(world.home) as ledger:
        where = {"environment": "prod", "service": HOSTILE}
        ledger.append(
            Event.create(
                "instance.created",
                "user:deployer",
                HOSTILE_INSTANCE,
                {**where, "digest": world.v2, "runtime": HOSTILE, "deployment": HOSTILE},
            )
        )
        finding = {"kind": HOSTILE, "severity": "high", "control": HOSTILE, "path": HOSTILE}
        drift = Event.create(
            "drift.detected",
            "immutrail:reconciler",
            HOSTILE_INSTANCE,
            {**where, "digest": world.v2, "findings": [finding]},
        )
        return ledger.append(drift).index


@pytest.fixture(scope="module")
def site(world: World) -> Iterator[Site]:
    home = world.home
    now = datetime.now(UTC)
    tokens: dict[str, str] = {}
    with open_ledger(home) as ledger:
        bootstrap(home, ledger, NewPrincipal.check(ADMIN, "person", "Root"), passphrase=None)
        admin = login(home, ledger, ADMIN)
        for role in (Role.AUDITOR, Role.REVIEWER, Role.BUILDER):
            name = f"p-{role.value}"
            add_principal(home, ledger, admin, name, [role], role_environments(role), key=False)
            made = create_token(ledger, admin, name, expires=now + timedelta(days=1), now=now)
            tokens[role.value] = made.secret
        # Valid for a few seconds: expired by the time the test that needs it waits it out.
        expires = now + timedelta(seconds=3)
        tokens["expiring"] = create_token(
            ledger, admin, "p-auditor", expires=expires, now=now
        ).secret
    hostile = _hostile_events(world)
    servers = Servers()
    try:
        server = servers(home)
        yield Site(server.url, world, tokens, expires.replace(microsecond=0), hostile)
    finally:
        servers.stop()


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    opened = new_page(browser, site.url)
    yield opened
    opened.context.close()


def log_in(page: Page, token: str) -> None:
    page.goto("/ui/login")
    page.fill("#token", token)
    page.click("section.login button[type=submit]")


def picker(moment: str) -> str:
    """A ledger time as the datetime-local input takes it (milliseconds)."""
    return moment.removesuffix("Z")[:23]


def _cookies(page: Page) -> dict[str, dict[str, object]]:
    return {c["name"]: dict(c) for c in page.context.cookies()}


# --- the auditor's path -------------------------------------------------------------------------


def test_auditor_picks_a_time_sees_what_ran_opens_the_chain_and_verifies_a_bundle(
    site: Site, page: Page
) -> None:
    world = site.world
    page.goto("/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.fill("#token", site.tokens["auditor"])
    page.click("section.login button[type=submit]")
    expect(page).to_have_url(f"{site.url}/ui/")
    session = _cookies(page)["immutrail_ui_session"]
    assert session["httpOnly"] is True and session["sameSite"] == "Strict"
    assert session["path"] == "/ui"

    page.click("table.envs >> text=What ran at…")
    page.fill("#t", picker(world.between))
    page.click("form.picker button")
    expect(page.locator(".count-running")).to_have_text("2")
    digests = page.locator("article.instance code.digest").all_inner_texts()
    assert digests == [world.v1, world.v1]
    first = page.locator("article.instance").filter(has_text=world.drifted)
    expect(first.locator("code.commit")).to_have_text(re.compile(r"[0-9a-f]{40}"))
    expect(first).to_contain_text("https://git.example.org/shop/hello")
    expect(first.locator(".approval")).to_have_count(2)
    expect(first.locator(".approvals")).to_contain_text("alice")
    expect(first.locator(".approvals")).to_contain_text("bob")
    expect(first.locator(".deployer")).to_have_text("user:deployer")
    expect(first).to_contain_text("/opt/hello/server.py")  # the drift open at that moment
    expect(first.locator("td").filter(has_text="IMT-BL-009")).to_contain_text("passed")

    with page.expect_download() as download:
        page.click("form.bundle button")
    data = Path(download.value.path()).read_bytes()
    report = verify_bundle(data, vkey=world.vkey)
    assert report.ok, report.problems
    assert report.answer is not None
    assert {row["digest"] for row in report.answer["instances"]} == {world.v1}
    assert sorted(r["instance"] for r in report.answer["instances"]) == sorted(
        world.v1_deploy.created
    )

    first.get_by_text("Evidence chain of this instance").click()
    expect(page.locator("h1")).to_contain_text(world.drifted)
    stages = set(page.locator("svg g.node").evaluate_all("ns => ns.map(n => n.dataset.stage)"))
    assert stages == ALL_STAGES
    expect(page.locator("svg g.node.missing")).to_have_count(0)
    expect(page.locator("svg g.node.bad[data-stage=drift]")).to_have_count(1)
    expect(page.locator("svg path.edge")).not_to_have_count(0)
    scan = page.locator("svg g.node[data-stage=scan]")
    index = scan.get_attribute("data-index")
    scan.locator("a").click()
    expect(page).to_have_url(f"{site.url}/ui/entry/{index}")
    expect(page.locator("td.type")).to_have_text("scan.completed")


def test_the_chain_of_an_image_shows_the_refusal_the_override_and_its_bundle_verifies(
    site: Site, page: Page
) -> None:
    world = site.world
    log_in(page, site.tokens["auditor"])
    page.fill("header input[name=ref]", world.v2)
    page.click("header form.search button")
    promotions = page.locator("svg g.node[data-stage=promotion]")
    expect(promotions).to_have_count(2)
    expect(promotions.nth(0)).to_have_class(re.compile(r"\bbad\b"))
    expect(promotions.nth(1)).to_have_class(re.compile(r"\bwarn\b"))
    assert promotions.nth(1).get_attribute("data-index") == str(world.override_index)
    expect(page.locator(".promotion").nth(1)).to_contain_text("INC-42 hotfix")
    killed = page.locator("svg g.node[data-stage=destruction]").filter(has_text="terminated")
    expect(killed).to_have_count(1)

    with page.expect_download() as download:
        page.click("form.bundle button")
    report = verify_bundle(Path(download.value.path()).read_bytes(), vkey=world.vkey)
    assert report.ok, report.problems
    assert report.answer is not None and report.answer["ref"] == world.v2
    assert download.value.suggested_filename.startswith("evidence-trace-")


def test_timeline_is_paged_and_filtered(site: Site, page: Page) -> None:
    log_in(page, site.tokens["auditor"])
    page.goto("/ui/env/prod/timeline?per=10")
    expect(page.locator("table.timeline tbody tr")).to_have_count(10)
    summary = page.locator("p.summary").inner_text()
    pages = int(re.search(r"page 1 of (\d+)", summary).group(1))  # type: ignore[union-attr]
    assert pages > 2
    page.click("a[rel=next]")
    expect(page.locator("p.summary")).to_contain_text(f"page 2 of {pages}")
    page.select_option("#category", "override")
    page.click("form.picker button")
    rows = page.locator("table.timeline tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("INC-42 hotfix")
    expect(rows.locator(".actor")).to_have_text("ops")
    page.select_option("#category", "promotion-refused")
    page.click("form.picker button")
    expect(rows).to_have_count(1)
    expect(rows.locator("a.ix")).to_have_text(f"#{site.world.refused_index}")


def test_drift_findings_of_an_environment(site: Site, page: Page) -> None:
    world = site.world
    log_in(page, site.tokens["auditor"])
    page.goto("/ui/env/prod/drift")
    closed = page.locator("article.drift-report.closed")
    expect(closed).to_have_count(1)
    expect(closed).to_contain_text(world.drifted)
    expect(closed).to_contain_text("CIS-5.2")
    expect(closed).to_contain_text(f"replaced by {world.v2_deploy.created[0]}")
    expect(page.locator("article.drift-report.open")).to_have_count(1)  # the hostile one
    page.click("text=show open ones only")
    expect(page.locator("article.drift-report")).to_have_count(1)


# --- hostile data, refused callers, forms -------------------------------------------------------


def test_hostile_event_fields_are_shown_as_text(site: Site, page: Page) -> None:
    log_in(page, site.tokens["auditor"])
    pages = [
        "/ui/env/prod/at",
        "/ui/env/prod/drift",
        "/ui/env/prod/timeline?category=drift",
        f"/ui/entry/{site.hostile_index}",
    ]
    for path in pages:
        page.goto(path)
        _only_text(page, path)
    page.goto("/ui/env/prod/drift")
    page.get_by_role("link", name=HOSTILE_INSTANCE).first.click()  # to its evidence chain
    expect(page.locator("svg g.node[data-stage=instance]")).to_contain_text(HOSTILE_INSTANCE[:20])
    _only_text(page, "the chain")

    body = httpx.get(
        f"{site.url}/ui/env/prod/drift", cookies={"immutrail_ui_session": site.tokens["auditor"]}
    ).text
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in body
    assert "<script" not in body and "<img" not in body and "<svg onload" not in body


def _only_text(page: Page, where: str) -> None:
    assert page.locator("script, img, [onerror], [onload]").count() == 0, where
    assert page.evaluate("window.__xss") is None, where
    assert "<script>window.__xss=1</script>" in page.locator("main").inner_text(), where


def test_bad_and_expired_tokens_are_refused(site: Site, page: Page) -> None:
    wait = (site.expires - datetime.now(UTC)).total_seconds() + 1.1
    time.sleep(min(max(wait, 0), 5))
    for token in ("imt_" + "0" * 16 + "_" + "1" * 64, "not a token", site.tokens["expiring"]):
        log_in(page, token)
        expect(page.locator("p.error")).to_have_text("invalid or expired token")
        expect(page).to_have_url(re.compile(r"/ui/login$"))
        assert "immutrail_ui_session" not in _cookies(page)
    # A session cookie holding the expired token is sent back to log in, and forgotten.
    page.context.add_cookies(
        [
            {
                "name": "immutrail_ui_session",
                "value": site.tokens["expiring"],
                "domain": "127.0.0.1",
                "path": "/ui",
            }
        ]
    )
    page.goto("/ui/env/prod/at")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=%2Fui%2Fenv%2Fprod%2Fat$"))
    assert "immutrail_ui_session" not in _cookies(page)


def _client(site: Site, token: str | None) -> tuple[httpx.Client, str]:
    """A client holding a CSRF cookie (and a session of ``token``), and that CSRF token."""
    csrf = secrets.token_hex(32)
    cookies = {"immutrail_ui_csrf": csrf}
    if token is not None:
        cookies["immutrail_ui_session"] = token
    return httpx.Client(base_url=site.url, cookies=cookies, follow_redirects=False), csrf


def test_unauthorized_callers_learn_nothing_about_what_exists(site: Site, page: Page) -> None:
    world = site.world
    log_in(page, site.tokens["builder"])
    expect(page.locator("p.error")).to_have_text("access denied: p-builder may not audit.read")
    assert "immutrail_ui_session" not in _cookies(page)

    existing = f"/ui/trace?ref={world.v1}"
    missing = "/ui/trace?ref=sha256:" + "e" * 64
    for token, status in ((None, 303), ("imt_" + "0" * 16 + "_" + "1" * 64, 303)):
        client, _ = _client(site, token)
        with client:
            answers = [client.get(p) for p in (existing, missing, "/ui/no/such/page")]
        assert {a.status_code for a in answers} == {status}
        assert {a.headers["location"].split("?")[0] for a in answers} == {"/ui/login"}
    client, _ = _client(site, site.tokens["builder"])
    with client:
        answers = [client.get(p) for p in (existing, missing, "/ui/no/such/page", "/ui/entry/3")]
        bundle = client.post("/ui/bundle", data={"kind": "trace", "ref": world.v1})
    assert {a.status_code for a in answers} == {403}
    assert len({a.text for a in answers}) == 1
    assert world.v1 not in answers[0].text and "p-builder may not audit.read" in answers[0].text
    assert bundle.status_code == 403 and world.v1 not in bundle.text


def test_a_reviewer_reads_but_cannot_export(site: Site) -> None:
    world = site.world
    client, csrf = _client(site, site.tokens["reviewer"])
    with client:
        shown = client.get(f"/ui/env/prod/at?t={world.between}")
        refused = client.post("/ui/bundle", data={"csrf": csrf, "kind": "trace", "ref": world.v1})
    assert shown.status_code == 200 and world.v1 in shown.text
    assert "Download evidence bundle" not in shown.text
    assert refused.status_code == 403
    assert "p-reviewer may not audit.export" in refused.text


def test_forms_need_their_csrf_token_and_this_origin(site: Site) -> None:
    form = {"kind": "trace", "ref": site.world.v1}
    client, csrf = _client(site, site.tokens["auditor"])
    with client:
        missing = client.post("/ui/bundle", data=form)
        wrong = client.post("/ui/bundle", data={**form, "csrf": "0" * 64})
        foreign = client.post(
            "/ui/bundle", data={**form, "csrf": csrf}, headers={"origin": "http://evil.example"}
        )
        login = client.post("/ui/login", data={"token": site.tokens["auditor"]})
        good = client.post("/ui/bundle", data={**form, "csrf": csrf}, headers={"origin": site.url})
    for refused in (missing, wrong, foreign, login):
        assert refused.status_code == 403, refused.text
        assert "set-cookie" not in refused.headers or "session" not in refused.headers["set-cookie"]
    assert site.world.v1 not in missing.text
    assert good.status_code == 200 and good.headers["content-type"] == "application/json"
    csp = good.headers.get("content-security-policy") or ""
    assert "default-src 'none'" in csp


def test_logout_ends_the_session(site: Site, page: Page) -> None:
    log_in(page, site.tokens["auditor"])
    expect(page.locator("header .who")).to_have_text("p-auditor")
    page.click("header button:has-text('Log out')")
    expect(page).to_have_url(f"{site.url}/ui/login")
    assert "immutrail_ui_session" not in _cookies(page)
    page.goto("/ui/env/prod/timeline")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))


def test_reports_list_the_frameworks_and_produce_one(site: Site, page: Page) -> None:
    log_in(page, site.tokens["auditor"])
    page.goto("/ui/reports")
    ids = page.locator("table.frameworks code").all_inner_texts()
    assert "soc2" in ids and "pci-dss-4" in ids
    page.select_option("#framework", "soc2")
    page.fill("#from", picker(site.world.before_any))
    page.fill("#to", picker(site.world.end))
    page.fill("#env", "prod")
    page.select_option("#output", "csv")
    with page.expect_download() as download:
        page.click("form.report-form button")
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) > 1 and any("CC8.1" in cell for row in rows for cell in row)
    page.select_option("#output", "view")
    page.click("form.report-form button")
    expect(page.locator("h1")).to_contain_text("SOC 2")
