"""The web page in a real browser: Debian's chromium driven by Playwright (the system browser's
executable; Playwright's own browsers are never installed) against a real `pagelens serve` on
loopback with a tiny ColQwen2.5 checkpoint. Enter the key (a wrong one first), create a
collection, upload a 5-page PDF whose name is HTML, follow its progress, search, see 5 thumbnails
(only thumbnails: every page image request carries `width`), open one and find the query's
similarity heatmap drawn over it (canvas pixels not all transparent), ask (answered by a local
OpenAI-compatible stand-in) and follow the streamed answer's citation to its page. Screenshots of each step go
to test-artifacts/ui/ (git-ignored) for a person to look at.

Without chromium the test fails under CI (CI=true: .ci/run installs it, so its absence is a broken
install) and skips with the reason elsewhere."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tests.api.server import running_server
from tests.conftest import make_page

KEY = "browser-test-key"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
HOSTILE_NAME = "<img src=x onerror=alert(1)>.pdf"
TIMEOUT_MS = 120_000
ANSWER = "Revenue grew [1], while costs fell [2]."  # what the stand-in answer model streams
CANVAS_ALPHA = """() => { const c = document.querySelector('#heatmap-canvas');
    return [...c.getContext('2d').getImageData(0, 0, c.width, c.height).data].filter((v, i) => i % 4 == 3); }"""
MAX_DOCUMENT_BYTES = 3_000_000  # the server's upload limit: a 4 MB file is refused with a 413


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "Debian's chromium is not installed (apt-get install chromium; .ci/run installs it as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def five_page_pdf() -> bytes:
    """Five 288 x 384 pt pages (600 x 800 px at 150 DPI) of synthetic text bars."""
    images = [make_page(600, 800, seed) for seed in range(5)]
    buffer = io.BytesIO()
    images[0].save(buffer, "PDF", save_all=True, append_images=images[1:], resolution=150)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def standin():
    """A local OpenAI-compatible answer server (pagelens.testing.llm_standin), the server's --llm-url."""
    from pagelens.testing.llm_standin import StandInLLM

    server = StandInLLM(ANSWER, tokens_per_second=200)
    with server.running() as url:
        yield url


@pytest.fixture(scope="module")
def ui_server(tiny_model, tmp_path_factory, standin):
    log_path = tmp_path_factory.mktemp("ui-server") / "server.log"
    limit = {"PAGELENS_MAX_DOCUMENT_BYTES": str(MAX_DOCUMENT_BYTES)}
    with running_server(
        tiny_model, api_key=KEY, log_path=log_path, env=limit, extra_args=("--llm-url", standin)
    ) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


class Steps:
    """A page with its screenshots numbered by step, and every page-image request it made."""

    def __init__(self, page, name: str) -> None:
        self.page, self.name, self.count = page, name, 0
        self.image_requests: list[str] = []
        self.urls: list[str] = []
        self.dialogs: list[str] = []
        self.script_errors: list[str] = []
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for stale in ARTIFACTS.glob(f"{name}-*.png"):  # a previous run's: only this run's are left to look at
            stale.unlink()
        page.on("pageerror", lambda error: self.script_errors.append(str(error)))
        page.on("request", self._request)
        page.on("dialog", self._dialog)

    def _request(self, request) -> None:
        self.urls.append(request.url)
        if "/pages/" in request.url and not request.url.endswith("/heatmap"):
            self.image_requests.append(request.url)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "confirm":
            dialog.accept()
        else:
            dialog.dismiss()

    def shot(self, label: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(ARTIFACTS / f"{self.name}-{self.count:02d}-{label}.png"), full_page=True)


def unlabelled_controls(page) -> list[str]:
    """Visible inputs, selects and textareas without a label, and buttons and links without a name."""
    return page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button, a[href]')]
            .filter((el) => el.getClientRects().length && getComputedStyle(el).visibility !== 'hidden')
            .filter((el) => ['BUTTON', 'A'].includes(el.tagName)
                ? !(el.getAttribute('aria-label') || el.textContent.trim())
                : !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map((el) => el.outerHTML.slice(0, 80))"""
    )


def tab_reaches(page, selector: str, presses: int = 60) -> bool:
    """Whether pressing Tab from the top of the page focuses `selector` within `presses`."""
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement === document.querySelector(s)", selector):
            return True
    return False


def test_the_page_end_to_end_in_chromium(ui_server, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    steps = Steps(page, "desktop")

    served = page.goto(f"{ui_server}/ui")
    assert served.status == 200
    assert "script-src 'self'" in served.headers["content-security-policy"]
    assert served.headers["x-content-type-options"] == "nosniff" and served.headers["referrer-policy"]

    # the key: a wrong one is refused in words and asked again; the right one opens the page
    page.get_by_label("The API key of this server").fill("not-the-key")
    page.keyboard.press("Enter")
    page.get_by_text("The server refused that API key").wait_for()
    assert page.locator("#key-dialog").is_visible() and page.locator("#app").is_hidden()
    steps.shot("wrong-key")
    page.get_by_label("The API key of this server").fill(KEY)
    page.get_by_role("button", name="Continue").click()
    page.locator("#app").wait_for(state="visible")
    assert page.evaluate("() => sessionStorage.getItem('pagelens.apiKey')") == KEY

    # a collection
    page.get_by_label("New collection").fill("browser-test")
    page.get_by_role("button", name="Create").click()
    page.locator("#collection-title", has_text="browser-test").wait_for()
    assert page.locator("#collection-summary").text_content().startswith("0 documents · 0 pages · ")
    steps.shot("collection")

    # a 5-page PDF whose name is HTML: uploaded, followed to the end, listed by name as text
    pdf = tmp_path / HOSTILE_NAME.replace("/", "_")
    pdf.write_bytes(five_page_pdf())
    page.get_by_label("Metadata for these uploads").fill('{"team": "<b>finance</b>"}')
    page.locator("#file-input").set_input_files(str(pdf))
    page.locator(".upload.done").wait_for()
    assert "5 / 5 pages" in page.locator(".upload-status").text_content()
    assert page.locator(".upload progress").evaluate("(bar) => [bar.value, bar.max]") == [5, 5]
    page.locator(".document-name").wait_for()
    assert page.locator(".document-name").text_content() == HOSTILE_NAME
    assert "team: <b>finance</b>" in page.locator(".document .metadata").text_content()
    assert page.locator("img[src='x']").count() == 0 and page.locator("b").count() == 0
    page.wait_for_function("() => document.querySelector('.document img.thumb').naturalWidth > 0")  # loaded lazily
    steps.shot("uploaded")

    # a refused upload is explained beside its file
    bad = tmp_path / "notes.txt"
    bad.write_text("plain text is no document")
    page.locator("#file-input").set_input_files(str(bad))
    page.locator(".upload.failed").wait_for()
    assert page.locator(".upload.failed .upload-status").text_content().startswith("Not a file type pagelens can read")

    # refused uploads are explained beside their file: too large (413, refused before the body is read)
    big = tmp_path / "scan.pdf"
    big.write_bytes(b"%PDF-1.7\n" + os.urandom(4_000_000))
    page.locator("#file-input").set_input_files(str(big))
    page.locator(".upload.failed", has_text="scan.pdf").wait_for()
    refused = page.locator(".upload.failed", has_text="scan.pdf").text_content()
    # the server's 413 in words, or, when the server closed the connection before the browser read
    # that answer, the page's own explanation: either names the limit
    assert "PAGELENS_MAX_DOCUMENT_BYTES" in refused, refused
    assert "Too large for this server" in refused or "stopped the upload of 3.8 MB" in refused, refused
    steps.shot("refused")

    # search: 5 thumbnails, every page image asked for with a width
    page.get_by_role("tab", name="Search").click()
    page.get_by_label("Query").fill("quarterly revenue table")
    page.get_by_role("button", name="Search", exact=True).click()
    page.get_by_text("5 results").wait_for()
    thumbnails = page.locator("#results img.result-thumb")
    assert thumbnails.count() == 5
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')].every((i) => i.complete && i.naturalWidth > 0)"
    )
    natural = thumbnails.evaluate_all("(images) => images.map((i) => i.naturalWidth)")
    assert all(16 <= width <= 400 for width in natural), natural
    steps.shot("search")

    # a search error is shown in words and the page keeps working
    page.get_by_label("Metadata filter").fill('{"nope": "x"}')
    page.get_by_role("button", name="Search", exact=True).click()
    page.get_by_text("The search failed").wait_for()
    assert "nope" in page.locator("#search-status").text_content()
    page.get_by_label("Metadata filter").fill("")
    page.get_by_role("button", name="Search", exact=True).click()
    page.get_by_text("5 results").wait_for()

    # open a result: the page viewer, flipping through the document
    page.locator(".result-button").first.click()
    page.locator("#viewer").wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('#viewer-image').naturalWidth > 0")
    assert page.locator("#viewer-title").text_content() == HOSTILE_NAME
    first = page.locator("#viewer-page").text_content()
    assert first.startswith("Page ") and first.endswith("of 5")
    # the query's similarity heatmap from the real route, drawn over the page: combined, then per token
    page.locator("#heatmap-controls").wait_for(state="visible")
    tokens = page.locator("#heatmap-token option").all_text_contents()
    assert tokens[0] == "All query tokens (combined)" and len(tokens) >= 2, tokens
    assert page.locator("#heatmap-canvas").is_visible()
    combined = page.evaluate(CANVAS_ALPHA)
    assert combined and max(combined) > 0, "the heatmap canvas is all transparent"
    box, image = page.locator("#heatmap-canvas").bounding_box(), page.locator("#viewer-image").bounding_box()
    assert abs(box["width"] - image["width"]) < 2 and abs(box["height"] - image["height"]) < 2
    steps.shot("viewer-heatmap")
    page.get_by_label("Similarity map").select_option(index=1)
    assert max(page.evaluate(CANVAS_ALPHA)) > 0
    steps.shot("viewer-heatmap-token")
    page.get_by_role("button", name="Previous page" if first.startswith("Page 5") else "Next page").click()
    assert page.locator("#viewer-page").text_content() != first
    page.get_by_role("button", name="Close").click()

    # ask: the answer streamed from the real route (answered by the stand-in), its citations opening pages
    page.get_by_role("tab", name="Ask").click()
    page.get_by_label("Question").fill("How did revenue change?")
    page.get_by_role("button", name="Ask", exact=True).click()
    page.locator("#ask-timings", has_text="total").wait_for()
    assert page.locator("#answer").text_content() == ANSWER and page.locator("#ask-error").text_content() == ""
    assert page.locator("#answer a.cite").all_text_contents() == ["[1]", "[2]"]
    cited = page.locator("#ask-sources li").first.text_content()
    assert cited.startswith(f"{HOSTILE_NAME}, page ")
    steps.shot("ask")
    page.locator("#answer a.cite", has_text="[1]").click()
    page.locator("#viewer").wait_for(state="visible")
    number = cited.removeprefix(f"{HOSTILE_NAME}, page ").split()[0]
    assert page.locator("#viewer-page").text_content().startswith(f"Page {number}")  # never the page viewed before
    page.wait_for_function("() => document.querySelector('#viewer-image').naturalWidth > 0")
    page.locator("#viewer-page", has_text=" of ").wait_for()  # the page count comes with the document
    assert page.locator("#viewer-page").text_content() == f"Page {number} of 5"
    steps.shot("ask-citation")
    page.get_by_role("button", name="Close").click()
    page.get_by_role("tab", name="Search").click()

    widths = [parse_qs(urlparse(url).query).get("width") for url in steps.image_requests]
    assert steps.image_requests and all(widths), [u for u, w in zip(steps.image_requests, widths, strict=True) if not w]
    assert steps.dialogs == [], steps.dialogs  # no alert(1) ever ran
    assert not [url for url in steps.urls if KEY in url], "the key went into a URL"
    assert steps.script_errors == []

    # every control is labelled and reachable by keyboard
    assert unlabelled_controls(page) == []
    assert tab_reaches(page, "#search-query") and tab_reaches(page, "#delete-collection")
    assert tab_reaches(page, "#collection-list button") and tab_reaches(page, "#change-key")

    # 375 px wide: nothing wider than the screen
    page.set_viewport_size({"width": 375, "height": 812})
    page.get_by_role("tab", name="Documents").click()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    steps.shot("narrow-documents")
    page.get_by_role("tab", name="Search").click()
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    steps.shot("narrow-search")
    page.locator(".result-button").first.click()
    page.wait_for_function("() => document.querySelector('#viewer-image').naturalWidth > 0")
    assert page.locator("#viewer-image").bounding_box()["width"] <= 375
    steps.shot("narrow-viewer")
    page.keyboard.press("Escape")  # a dialog closes with Escape
    page.locator("#viewer").wait_for(state="hidden")
    page.set_viewport_size({"width": 1440, "height": 900})

    # delete the document, then the collection, each after a confirmation
    page.get_by_role("tab", name="Documents").click()
    page.get_by_role("button", name=f"Delete {HOSTILE_NAME}").click()
    page.get_by_text("No documents yet").wait_for()
    page.get_by_role("button", name="Delete collection").click()
    page.locator("#no-collection").wait_for(state="visible")
    assert [d.split(":")[0] for d in steps.dialogs] == ["confirm", "confirm"]
    steps.shot("deleted")
    context.close()


def test_heatmap_and_ask_cases_the_real_server_cannot_give_here(ui_server, browser, tmp_path):
    """What the tiny server cannot show: a heatmap answered 409 (pooled pages) hides the control; a
    server without an answer model (501) has the ask box name the flags; sources without names;
    a citation of no source stays text. The browser's requests to those two routes are answered by
    the test with the routes' documented bodies; everything else by the real server."""
    import json

    import httpx

    with httpx.Client(base_url=ui_server, headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as client:
        assert client.post("/collections", json={"name": "contracts"}).status_code == 201
        files = {"file": ("report.pdf", five_page_pdf(), "application/pdf")}
        document_id = client.post("/collections/contracts/documents", files=files).json()["id"]

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    steps = Steps(page, "contracts")
    heatmap_pages: list[int] = []
    asks: list[dict] = []

    def heatmap(route):
        number = int(route.request.url.rsplit("/pages/", 1)[1].split("/")[0])
        heatmap_pages.append(number)
        assert json.loads(route.request.post_data) == {"query": "quarterly revenue"}
        assert route.request.headers["authorization"] == f"Bearer {KEY}"
        if len(heatmap_pages) > 1:  # pages after the first: stored pooled
            body = {"error": {"type": "model_mismatch", "message": "the pages are stored pooled"}}
            return route.fulfill(status=409, json=body)
        ramp = [[row * 3 + column for column in range(3)] for row in range(4)]
        corners = [[1, 0, 0], [0] * 3, [0] * 3, [0, 0, 9]]
        combined = [[(a + b) / 2 for a, b in zip(x, y, strict=True)] for x, y in zip(ramp, corners, strict=True)]
        route.fulfill(
            json={
                "document_id": document_id,
                "page": number,
                "query": "quarterly revenue",
                "tokens": ["quarterly", "revenue"],
                "token_rows": [1, 2],
                "grid": [4, 3],
                "maps": [ramp, corners],
                "combined": combined,
                "value_range": [0, 11],
                "score": 7.5,
            }
        )

    def ask(route):
        asks.append(json.loads(route.request.post_data))
        if len(asks) == 1:
            body = {"error": {"type": "llm_not_configured", "message": "no answer model is configured"}}
            return route.fulfill(status=501, json=body)
        sources = [
            {"document_id": document_id, "page": 3, "score": 9.5, "name": "report.pdf", "metadata": {}},
            {"document_id": document_id, "page": 1, "score": 8.25, "metadata": {}},  # no name: looked up
        ]
        events = [
            ("sources", {"sources": sources}),
            ("token", {"text": "Revenue grew "}),
            ("token", {"text": "[1] while costs fell [2]; see [7]."}),
            (
                "done",
                {
                    "timings": {"embed_ms": 12.4, "search_ms": 3.1, "ttft_ms": 80.0, "generate_ms": 250.2},
                    "usage": {"prompt_tokens": 900, "completion_tokens": 9},
                    "model": "stand-in",
                    "cached": False,
                    "finish_reason": "stop",
                },
            ),
        ]
        stream = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)
        route.fulfill(status=200, body=stream, headers={"Content-Type": "text/event-stream"})

    page.route("**/heatmap", heatmap)
    page.route("**/collections/contracts/ask", ask)
    page.goto(f"{ui_server}/ui")
    page.get_by_label("The API key of this server").fill(KEY)
    page.keyboard.press("Enter")
    page.get_by_role("button", name="contracts").click()

    # the heatmap: drawn on the canvas over the page; per token; opacity; hidden on a 409
    page.get_by_role("tab", name="Search").click()
    page.get_by_label("Query").fill("quarterly revenue")
    page.get_by_role("button", name="Search", exact=True).click()
    page.get_by_text("5 results").wait_for()
    page.locator(".result-button").first.click()
    page.locator("#heatmap-controls").wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('#viewer-image').naturalWidth > 0")
    options = page.locator("#heatmap-token option").all_text_contents()
    assert options == ["All query tokens (combined)", "1: quarterly", "2: revenue"]
    alpha = CANVAS_ALPHA
    combined = page.evaluate(alpha)
    assert len(combined) == 12 and max(combined) == 255 and any(value > 0 for value in combined)
    assert page.locator("#heatmap-canvas").is_visible()
    box, image = page.locator("#heatmap-canvas").bounding_box(), page.locator("#viewer-image").bounding_box()
    assert abs(box["width"] - image["width"]) < 2 and abs(box["height"] - image["height"]) < 2
    page.get_by_label("Similarity map").select_option(label="2: revenue")
    second = page.evaluate(alpha)
    assert second != combined and second[0] > second[1] and second[11] == 255
    page.get_by_label("Opacity").fill("0.3")
    assert page.locator("#heatmap-canvas").evaluate("(c) => c.style.opacity") == "0.3"
    steps.shot("heatmap")
    page.get_by_role("button", name="Previous page" if heatmap_pages[0] == 5 else "Next page").click()
    page.get_by_text("No similarity map for this page").wait_for()
    assert page.locator("#heatmap-controls").is_hidden() and page.locator("#heatmap-canvas").is_hidden()
    steps.shot("heatmap-409")
    page.get_by_role("button", name="Close").click()

    # ask: without a generator the box names the flags; then a streamed answer with working citations
    page.get_by_role("tab", name="Ask").click()
    page.get_by_label("Question").fill("How did revenue change?")
    page.get_by_role("button", name="Ask", exact=True).click()
    page.get_by_text("This server has no answer model").wait_for()
    assert "--llm-url" in page.locator("#ask-error").text_content()
    steps.shot("ask-501")
    page.get_by_label("Search mode").select_option("fast")
    page.get_by_label("Only pages whose metadata matches").fill('{"team": "x"}')
    page.get_by_role("button", name="Ask", exact=True).click()
    page.locator("#ask-timings", has_text="embed question 12 ms").wait_for()
    question = {"question": "How did revenue change?", "k": 3, "mode": "fast", "max_tokens": 512, "stream": True}
    assert asks[-1] == {**question, "filter": {"team": "x"}}
    assert page.locator("#answer").text_content() == "Revenue grew [1] while costs fell [2]; see [7]."
    assert page.locator("#answer a.cite").all_text_contents() == ["[1]", "[2]"]  # [7] names no source
    timings = page.locator("#ask-timings").text_content()
    assert "first token 80 ms" in timings and "generate 250 ms" in timings and "9 answer tokens" in timings
    page.locator("#ask-sources li", has_text="report.pdf, page 1").wait_for()  # the name looked up
    assert page.locator("#ask-sources li").all_text_contents()[0].startswith("report.pdf, page 3")
    assert page.locator("#ask-error").text_content() == ""
    steps.shot("ask")
    page.locator("#answer a.cite", has_text="[1]").click()
    page.locator("#viewer").wait_for(state="visible")
    assert page.locator("#viewer-title").text_content() == "report.pdf"
    page.locator("#viewer-page", has_text=" of ").wait_for()  # the page count comes with the document
    assert page.locator("#viewer-page").text_content() == "Page 3 of 5"
    page.wait_for_function("() => document.querySelector('#viewer-image').naturalWidth > 0")
    steps.shot("ask-citation")
    assert steps.script_errors == []
    context.close()
