"""The web page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Loads the page from a real `vdis serve`, uploads two clips, waits for the swaps and checks that
the result <video> elements have decoded frames of the right size; a screenshot of the page is
written to artifacts/web-page.png. Skipped when chromium or playwright is missing (.ci/run
installs both).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.settings import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
ARTIFACTS = REPO / "artifacts"
SAMPLES = sorted((REPO / "service" / "static" / "samples").glob("*.mp4"))
SCALE = 4  # service/static/app.js asks for results upscaled by this
TIMEOUT_MS = 120_000  # the CPU may be shared with other work

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium installed")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, service_url):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(service_url + "/")
    page.wait_for_function("document.querySelectorAll('.samples button').length >= 8")
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def decoded(page, selector: str) -> dict:
    """Wait until the <video> has a decoded frame; its size, readyState and playback time."""
    page.wait_for_function(
        f"(() => {{ const v = document.querySelector('{selector}');"
        " return v && v.src && v.readyState >= 2 && v.videoWidth > 0; })()",
        timeout=TIMEOUT_MS)
    return page.eval_on_selector(selector, "v => ({width: v.videoWidth, height: v.videoHeight, "
                                           "ready: v.readyState, error: v.error && v.error.code})")


def test_upload_two_clips_and_see_both_swaps(page, service_url):
    model = page.evaluate("fetch('/model').then(r => r.json())")
    size = model["frame_size"] * SCALE
    page.set_input_files("#file-a", str(SAMPLES[0]))
    page.set_input_files("#file-b", str(SAMPLES[1]))
    for original in ("#original-a", "#original-b"):
        assert decoded(page, original)["width"] == 256  # the samples are 64 x 4 pixels wide
    # progress shows while the service works: recorded as it appears, however fast the answer
    page.evaluate("""() => {
        window.sawBusy = false;
        const status = document.querySelector('#swap-status');
        new MutationObserver(() => {
            if (status.querySelector('.busy')) window.sawBusy = true;
        }).observe(status, {childList: true, subtree: true, attributes: true});
    }""")
    page.click("#swap-button")
    for result in ("#result-ab", "#result-ba"):
        video = decoded(page, result)
        assert video == {"width": size, "height": size, "ready": video["ready"], "error": None}
        assert video["ready"] >= 2
    page.wait_for_selector("#swap-status .busy", state="detached", timeout=TIMEOUT_MS)
    assert page.evaluate("window.sawBusy")
    assert page.inner_text("#swap-status") == ""
    # the results loop: playback moves on
    page.wait_for_function("document.querySelector('#result-ab').currentTime > 0",
                           timeout=TIMEOUT_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)


def test_samples_generate_and_grid(page):
    page.click(".samples[data-slot=a] button >> nth=2")
    page.click(".samples[data-slot=b] button >> nth=3")
    page.click("#swap-button")
    decoded(page, "#result-ba")

    page.select_option("#generate-source", "slot:a")
    page.fill("#generate-n", "4")
    page.fill("#generate-seed", "5")
    page.click("#generate-button")
    video = decoded(page, "#generated")
    size = page.evaluate("fetch('/model').then(r => r.json())")["frame_size"] * SCALE
    assert (video["width"], video["height"]) == (2 * size, 2 * size)  # 4 results tiled 2 x 2
    assert "seed 5" in page.inner_text("#generated-caption")

    page.click("#grid-button")  # the four samples are ticked by default
    page.wait_for_function("document.querySelectorAll('#grid td video').length === 16",
                           timeout=TIMEOUT_MS)
    assert "4 × 4 grid" in page.inner_text("#grid-status")
    # every cell decoded (Chromium pauses muted videos scrolled out of view, so no playback check)
    page.wait_for_function("[...document.querySelectorAll('#grid video')].every("
                           "v => v.readyState >= 2)", timeout=TIMEOUT_MS)
    cell = decoded(page, "#grid tr:nth-child(3) td:nth-child(4) video")
    assert (cell["width"], cell["height"]) == (size, size)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page-grid.png"), full_page=True)


def test_a_dropped_file_fills_a_slot(page):
    data = list(SAMPLES[3].read_bytes())
    transfer = page.evaluate_handle(
        "bytes => { const t = new DataTransfer();"
        " t.items.add(new File([new Uint8Array(bytes)], 'dropped.mp4', {type: 'video/mp4'}));"
        " return t; }", data)
    page.dispatch_event("label[for=file-b]", "drop", {"dataTransfer": transfer})
    assert decoded(page, "#original-b")["width"] == 256
    assert page.get_attribute("#original-b", "title") == "dropped.mp4"
    assert "Video B (dropped.mp4)" in page.inner_text("#generate-source")


def test_api_errors_are_shown_in_words(page, tmp_path):
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_bytes(b"these are notes, not a video")
    page.set_input_files("#file-a", str(not_a_video))
    page.set_input_files("#file-b", str(SAMPLES[1]))
    page.click("#swap-button")
    alert = page.wait_for_selector("#swap-status .error[role=alert]", timeout=TIMEOUT_MS)
    assert alert.inner_text().startswith(
        "Video A (notes.mp4) was refused. The upload is not a video FFmpeg can read:")
    assert not page.is_disabled("#swap-button")  # the user can fix the input and retry


def test_a_failed_swap_clears_old_results_and_marks_the_refused_upload(page, tmp_path):
    page.set_input_files("#file-a", str(SAMPLES[0]))
    page.set_input_files("#file-b", str(SAMPLES[1]))
    page.click("#swap-button")
    decoded(page, "#result-ab")
    decoded(page, "#result-ba")
    notes = tmp_path / "notes.mp4"
    notes.write_bytes(b"these are notes, not a video")
    page.set_input_files("#file-b", str(notes))
    # the slot says the browser cannot show the file, instead of a black box
    page.wait_for_selector(".slot[data-slot=b] .no-preview:not([hidden])", timeout=TIMEOUT_MS)
    assert "notes.mp4" in page.inner_text(".slot[data-slot=b] .no-preview")
    assert page.is_hidden("#original-b")
    page.click("#swap-button")
    alert = page.wait_for_selector("#swap-status .error[role=alert]", timeout=TIMEOUT_MS)
    assert alert.inner_text().startswith("Video B (notes.mp4) was refused.")
    for result in ("#result-ab", "#result-ba"):  # the last swap's results are gone
        assert page.is_hidden(result)
        assert not page.get_attribute(result, "src")
    refused = page.inner_text(".slot[data-slot=b] .slot-error")
    assert refused.startswith("Refused: `") and "(notes.mp4) is refused: " in refused
    assert "refused" in page.get_attribute(".slot[data-slot=b]", "class")
    assert page.is_hidden(".slot[data-slot=a] .slot-error")
    page.set_input_files("#file-b", str(SAMPLES[1]))  # a good file clears the mark
    assert page.is_hidden(".slot[data-slot=b] .slot-error")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page-refused.png"), full_page=True)


def test_uploads_show_bytes_sent_then_processing(page):
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {  # about 30 KB/s up: a slow link
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 30_000})
    page.evaluate("""() => {
        window.statusTexts = [];
        const status = document.querySelector('#swap-status');
        new MutationObserver(() => window.statusTexts.push(status.innerText))
            .observe(status, {childList: true, subtree: true, characterData: true});
    }""")
    page.set_input_files("#file-a", str(SAMPLES[0]))
    page.set_input_files("#file-b", str(SAMPLES[1]))
    page.click("#swap-button")
    decoded(page, "#result-ab")
    texts = page.evaluate("window.statusTexts")
    total = 2 * (SAMPLES[0].stat().st_size + SAMPLES[1].stat().st_size) / 1e3
    uploading = [t for t in texts if t.startswith("Uploading ")]
    assert uploading and all(f" of {total:.1f} KB…" in t for t in uploading), texts
    assert uploading[0].startswith("Uploading 0.0 KB")
    assert len({t.split(" of ")[0] for t in uploading}) > 2, uploading  # it moved on
    processing = texts.index(next(t for t in texts if t.startswith("Swapping…")))
    assert processing > texts.index(uploading[-1])  # after the upload: processing


def test_each_slot_previews_the_square_the_model_sees(page, tmp_path):
    from tests.service.videos import encode, moving_square

    wide = tmp_path / "wide.mp4"
    wide.write_bytes(encode(moving_square(12, 192, 96)))  # 2:1, as a phone's landscape clip
    page.set_input_files("#file-a", str(wide))
    assert decoded(page, "#original-a")["width"] == 192
    fit = "getComputedStyle(document.querySelector('#original-a')).objectFit"
    assert page.evaluate(fit) == "cover"  # the centre square, as the model's crop
    page.select_option("#fit", "pad")
    assert page.evaluate(fit) == "contain"  # the whole frame with black bars, as the padding
    asked = []
    page.on("request", lambda r: asked.append(r.url) if "/swap" in r.url else None)
    page.click(".samples[data-slot=b] button >> nth=0")
    page.click("#swap-button")
    decoded(page, "#result-ab")
    assert len(asked) == 2 and all("fit=pad" in url for url in asked), asked


def test_the_page_loads_with_no_missing_file(browser, service_url):
    import httpx

    icon = httpx.get(service_url + "/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    context = browser.new_context()
    page = context.new_page()
    missing = []
    page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
    page.goto(service_url + "/")
    page.wait_for_function("document.querySelectorAll('.samples button').length >= 8")
    page.wait_for_load_state("networkidle")
    context.close()
    assert not missing, missing


def test_swagger_try_it_out_offers_the_video_as_a_download(browser, service_url):
    context = browser.new_context()
    page = context.new_page()
    outside = []
    page.on("request", lambda r: None if r.url.startswith((service_url, "data:", "blob:"))
            else outside.append(r.url))
    page.goto(service_url + "/docs")
    page.click(".opblock-summary-path[data-path='/swap']")
    page.click("button.try-out__btn")
    inputs = page.locator(".opblock.is-open input[type=file]")
    inputs.nth(0).set_input_files(str(SAMPLES[0]))
    inputs.nth(1).set_input_files(str(SAMPLES[1]))
    page.click(".opblock.is-open button.execute")
    link = page.wait_for_selector(".opblock.is-open a[download]", timeout=TIMEOUT_MS)
    assert link.inner_text() == "Download file" and link.get_attribute("download") == "vdis.mp4"
    page.wait_for_load_state("networkidle")
    context.close()
    assert not outside, outside


def test_the_page_needs_nothing_from_outside(service_url):
    import httpx

    html = httpx.get(service_url + "/").text
    assert "http://" not in html and "https://" not in html
    for asset in ("/static/app.js", "/static/style.css", "/static/samples/index.json"):
        response = httpx.get(service_url + asset)
        assert response.status_code == 200, asset
        assert "https://" not in response.text, asset
    assert httpx.get(service_url + "/docs").status_code == 200
    assert httpx.get(service_url + "/health").json() == {"status": "ok"}
    missing = httpx.get(service_url + "/static/nope.js")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
