"""The pages keel serves to people, on a real `keel serve`: the chat page driven by a real headless
Chromium (Debian's `chromium`, installed by `.ci/run`; driven by Playwright, whose wheel carries
its driver), and the API docs, whose assets must all come from keel itself."""

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlparse

import httpx
import pytest
from playwright.sync_api import expect

from cli.process import free_port
from graph.prompts import NOT_FOUND
from tests.integration.test_extractive_answers import EVENTS_QUESTION

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
QUESTION = "How often do idle connections receive a keep-alive comment?"


@pytest.fixture
def server(start_server, postgres_url: str, data_dir: Path):
    return start_server(KEEL_DATABASE_URL=postgres_url, KEEL_DATA_DIR=str(data_dir))


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """A headless Chromium; no `playwright install`, the system browser only."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: `apt-get install -y chromium` (.ci/run does it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_docs_pages_load_every_asset_from_keel(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for page, kinds in (
            ("/docs", {".js": "javascript", ".css": "text/css", ".ico": "image/svg+xml"}),
            ("/redoc", {".js": "javascript", ".ico": "image/svg+xml"}),
        ):
            html = client.get(page)
            assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
            urls = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']""", html.text)
            urls += re.findall(r"""url: ?["']([^"']+)["']""", html.text)  # swagger's spec URL
            assert "/openapi.json" in urls
            assets = [u for u in urls if Path(urlparse(u).path).suffix in kinds]
            assert {Path(u).suffix for u in assets} == set(kinds), (page, urls)
            for url in urls:
                absolute = urljoin(server.url + page, url)
                assert absolute.startswith(server.url + "/"), f"{page} refers to {url}"
                response = client.get(absolute)
                assert response.status_code == 200, url
                suffix = Path(urlparse(url).path).suffix
                expected = kinds.get(suffix, "application/json")
                assert expected in response.headers["content-type"], (url, response.headers)
                assert len(response.content) > (200 if suffix == ".ico" else 1000), url
            assert "cdn" not in html.text.lower() and "googleapis" not in html.text
        # ReDoc's bundle is served without the CDN logo it would otherwise ask for.
        redoc_js = client.get("/docs-assets/redoc.standalone.js")
        assert redoc_js.status_code == 200 and "javascript" in redoc_js.headers["content-type"]
        assert "cdn.redoc.ly" not in redoc_js.text and 'createElement("img"' in redoc_js.text


def test_docs_pages_render_offline_in_a_browser(server, browser):
    page = browser.new_page()
    # Nothing is asked of the network, so the pages' Content-Security-Policy blocks nothing
    # (ReDoc's bundle would ask a CDN for its logo) and the console stays clean.
    local = (server.url, f"blob:{server.url}", "data:")  # ReDoc runs a worker from a blob
    elsewhere: list[str] = []
    failed: list[str] = []
    console: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(local) else elsewhere.append(r.url))
    page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.goto(server.url + "/docs")
    page.locator(".opblock").first.wait_for(timeout=30_000)
    assert page.locator(".opblock").count() >= 10
    page.goto(server.url + "/redoc")
    page.get_by_text("Creates an empty thread.").first.wait_for(timeout=30_000)
    page.get_by_text("API docs by Redocly").wait_for(timeout=30_000)  # where the logo sits
    assert elsewhere == [] and failed == [] and console == [], (elsewhere, failed, console)
    page.close()


def test_chat_page_streams_answer_citations_and_resumes_threads(server, browser, tmp_path: Path):
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    foreign: list[str] = []
    page.on(
        "request",
        lambda r: None if r.url.startswith(server.url) else foreign.append(r.url),
    )
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    assert page.title() == "keel chat"
    icon = page.request.get(server.url + "/favicon.ico")
    assert icon.ok and icon.headers["content-type"] == "image/svg+xml"
    assert icon.text().startswith("<svg")

    page.fill("#question", QUESTION)
    page.click("#send")
    turn = page.locator(".turn.assistant").last
    turn.locator(".citations li").first.wait_for(timeout=60_000)
    # Citations come with their sentences: the run is over once the page takes questions again.
    expect(page.locator("#send")).to_be_enabled(timeout=30_000)
    answer = turn.locator(".answer").inner_text()
    assert "fifteen seconds" in answer
    sources = turn.locator(".citations .source").all_inner_texts()
    assert "streaming.md" in sources
    assert turn.locator(".citations .snippet").first.inner_text().strip()
    steps = turn.locator(".timeline li").all_inner_texts()
    assert [s.split()[0] for s in steps] == [
        "guard",
        "cache_lookup",
        "retrieve",
        "rerank",
        "generate",
    ]
    assert all(re.fullmatch(r"\w+ \d+ ms", s) for s in steps), steps
    assert turn.locator(".mark.cached").count() == 0
    page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)

    # The same question on a new thread comes from the cache: no tokens, the final answer only.
    first_thread = page.inner_text("#thread-label").split()[-1]
    page.click("#new-thread")
    page.fill("#question", QUESTION)
    page.click("#send")
    cached = page.locator(".turn.assistant").last
    cached.locator(".mark.cached").wait_for(timeout=60_000)
    assert cached.locator(".answer").inner_text() == answer
    assert "streaming.md" in cached.locator(".citations .source").all_inner_texts()

    # Upload a document, then reload and resume the first thread from the list.
    note = tmp_path / "lighthouse.md"
    note.write_text("# Harbor\n\nThe harbor lighthouse flashes green every six seconds.\n")
    blank = tmp_path / "index.html"  # a page without text is skipped, and named
    blank.write_text("<html><body><nav>Home</nav></body></html>")
    page.set_input_files("#files", [str(note), str(blank)])
    page.click("#upload button")
    page.locator("#upload-status").filter(has_text="chunk").wait_for(timeout=60_000)
    status = page.inner_text("#upload-status")
    assert status.startswith("1 document(s)")
    assert status.endswith("; skipped index.html (no text found)")
    page.reload()
    page.locator(f"#threads li[data-thread-id='{first_thread}']").click()
    expect(page.locator("#messages .turn")).to_have_count(2, timeout=30_000)
    assert page.locator(".turn.user").inner_text() == QUESTION
    assert page.locator(".turn.assistant .answer").inner_text() == answer
    assert "streaming.md" in page.locator(".citations .source").all_inner_texts()
    page.screenshot(path=str(tmp_path / "resumed.png"), full_page=True)
    assert not errors and not foreign, (errors, foreign)
    page.close()


def test_chat_page_sends_the_api_key_and_marks_degraded_answers(
    start_server, postgres_url: str, data_dir: Path, browser
):
    key = "page-test-key"
    keys = json.dumps({hashlib.sha256(key.encode()).hexdigest(): "default"})
    # An LLM endpoint where nothing listens: the fallback answers extractively and says why.
    server = start_server(
        KEEL_DATABASE_URL=postgres_url,
        KEEL_DATA_DIR=str(data_dir),
        KEEL_API_KEYS=keys,
        KEEL_LLM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
    )
    page = browser.new_page()
    page.goto(server.url + "/")
    page.locator("#error").filter(has_text="401").wait_for(timeout=30_000)
    page.fill("#api-key", key)
    page.dispatch_event("#api-key", "change")
    expect(page.locator("#error")).to_have_text("", timeout=30_000)
    page.fill("#question", QUESTION)
    page.click("#send")
    page.locator(".turn.assistant .mark.degraded").first.wait_for(timeout=60_000)
    assert "fifteen seconds" in page.locator(".turn.assistant .answer").inner_text()
    assert page.locator(".turn.assistant .citations li").count() >= 1
    degraded = page.locator(".turn.assistant .mark.degraded").all_inner_texts()
    assert degraded and all(m.startswith("degraded: ") for m in degraded), degraded
    page.close()


def test_chat_page_upload_errors_thread_list_and_every_answers_citations(
    server, browser, tmp_path: Path
):
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")

    # A rejected upload says why beside the form, not "uploading…", and empties the picker.
    binary = tmp_path / "tool.bin"
    binary.write_bytes(b"\x00\x01\x02 not a document")
    page.set_input_files("#files", str(binary))
    page.click("#upload button")
    failed = page.locator("#upload-status.error")
    failed.wait_for(timeout=30_000)
    assert failed.inner_text().startswith("upload failed: 415 unsupported_file_type: tool.bin")
    assert page.inner_text("#error") == ""
    assert page.eval_on_selector("#files", "input => input.files.length") == 0

    # Two turns on one thread: cited sentences, each source listed once, then a question
    # nothing answers.
    page.fill("#question", EVENTS_QUESTION)
    page.click("#send")
    first = page.locator(".turn.assistant").nth(0)
    expect(first.locator(".citations li").first).to_be_visible(timeout=60_000)
    expect(page.locator("#send")).to_be_enabled(timeout=30_000)
    cited = set(re.findall(r"\[(\d+)\]", first.locator(".answer").inner_text()))
    assert len(cited) >= 2 and first.locator(".citations li").count() == len(cited)
    thread_id = page.inner_text("#thread-label").split()[-1]
    page.fill("#question", "How do I bake chocolate chip cookies?")
    page.click("#send")
    second = page.locator(".turn.assistant").nth(1)
    expect(second.locator(".mark.not-found")).to_have_count(1, timeout=60_000)
    assert second.locator(".answer").inner_text() == NOT_FOUND
    assert page.locator(".mark.degraded").count() == 0

    # Many threads: the list scrolls, the upload form and the API key stay on screen.
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(40):
            assert client.post("/v1/threads").status_code == 201
    page.reload()
    listed = page.locator(f"#threads li[data-thread-id='{thread_id}']")
    expect(listed.locator(".question")).to_have_text(EVENTS_QUESTION, timeout=30_000)
    assert page.locator("#threads li").count() >= 41  # the database is the session's
    assert page.eval_on_selector("#threads", "list => list.scrollHeight > list.clientHeight")
    for control in ("#upload button", "#files", "#api-key"):
        box = page.locator(control).bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 720, control

    # Resumed: every answer keeps its own citations, and "not found" is still not degraded.
    listed.click()
    expect(page.locator("#messages .turn")).to_have_count(4, timeout=30_000)
    turns = page.locator(".turn.assistant")
    assert turns.nth(0).locator(".citations li").count() == len(cited)
    assert f"[{len(cited)}]" in turns.nth(0).locator(".answer").inner_text()
    assert turns.nth(1).locator(".citations li").count() == 0
    assert turns.nth(1).locator(".mark.not-found").count() == 1
    assert page.locator(".mark.degraded").count() == 0
    page.screenshot(path=str(tmp_path / "threads.png"))
    assert not errors, errors
    page.close()
