"""The web page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Loads the page from a real `vdis serve` of a models root with three models (the tiny test
model, the default, with the shipped sample clips; the shipped Sprites model; the tiny model
again under another name, with no samples), uploads clips, waits for the swaps and checks that
the result <video> elements have decoded frames of the right size, that the picker's model is
the one every request names, and that a natural-looking clip gets the Sprites model's
out-of-domain warning beside its result; screenshots go to artifacts/web-page*.png. Skipped
when chromium or playwright is missing (.ci/run installs both).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.settings import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
ARTIFACTS = REPO / "artifacts"
SAMPLES = sorted((REPO / "service" / "static" / "samples").glob("*.mp4"))
DEFAULT, SPRITES, BARE = "tiny-dsvae", "sprites-dsvae", "tiny-bare"  # the models served here
SCALE = 4  # service/static/app.js asks for results upscaled by this
TIMEOUT_MS = 120_000  # the CPU may be shared with other work

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium installed")


@pytest.fixture(scope="module")
def models_root(tiny_model_dir, tmp_path_factory) -> Path:
    """tiny/ (tiny-dsvae, with the shipped sample clips), sprites/ (the shipped model, linked)
    and bare/ (the tiny model renamed tiny-bare, no samples)."""
    root = tmp_path_factory.mktemp("web-models")
    shutil.copytree(tiny_model_dir, root / "tiny")
    shipped = REPO / "service" / "static" / "samples"
    (root / "tiny" / "samples").mkdir()
    for sample in json.loads((shipped / "index.json").read_text()):
        shutil.copy(shipped / sample["file"], root / "tiny" / "samples" / sample["file"])
    shutil.copy(shipped / "index.json", root / "tiny" / "samples" / "index.json")
    (root / "sprites").symlink_to(REPO / "models" / "sprites", target_is_directory=True)
    shutil.copytree(tiny_model_dir, root / "bare")
    manifest = json.loads((root / "bare" / "manifest.json").read_text())
    (root / "bare" / "manifest.json").write_text(json.dumps({**manifest, "name": BARE}))
    return root


@pytest.fixture(scope="module")
def service_url(models_root) -> str:
    """A real `vdis serve` of models_root, tiny-dsvae the default (this module's own: the
    session's service_url serves one model)."""
    from tests.liveservice import running_service

    env = {"VDIS_MODEL_DIR": "", "VDIS_MODELS_DIR": str(models_root),
           "VDIS_DEFAULT_MODEL": DEFAULT}
    with running_service(models_root, env=env) as url:
        yield url


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


def swap_samples(page, a: int, b: int) -> None:
    """Slot A takes the chosen model's sample a, slot B its sample b (from 0); then Swap."""
    page.click(f".samples[data-slot=a] button >> nth={a}")
    page.click(f".samples[data-slot=b] button >> nth={b}")
    page.click("#swap-button")


def generate_from_a(page, n: int) -> None:
    """New motions for the appearance of the clip in slot A."""
    page.select_option("#generate-source", "slot:a")
    page.fill("#generate-n", str(n))
    page.click("#generate-button")


def tick_only_the_slots(page) -> None:
    """The grid of Video A and Video B alone (the samples unticked)."""
    page.evaluate("document.querySelectorAll('#grid-clips input').forEach("
                  "i => { i.checked = i.value.startsWith('slot:'); })")


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
    swap_samples(page, 2, 3)
    decoded(page, "#result-ba")

    page.fill("#generate-seed", "5")
    generate_from_a(page, 4)
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
    for asset in ("/static/app.js", "/static/style.css", "/models"):
        response = httpx.get(service_url + asset)
        assert response.status_code == 200, asset
        assert "https://" not in response.text, asset
    assert httpx.get(service_url + "/docs").status_code == 200
    assert httpx.get(service_url + "/health").json() == {"status": "ok"}
    missing = httpx.get(service_url + "/static/nope.js")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


def model_call(url: str) -> bool:
    return url.split("?")[0].endswith(("/swap", "/generate", "/encode", "/decode"))


def model_requests(page) -> list[str]:
    """The URLs of the model requests the page sends from now on (filled as they go)."""
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if model_call(r.url) else None)
    return asked


def test_the_model_picker_lists_the_models_served_and_each_ones_samples(page, service_url):
    import httpx

    served = httpx.get(service_url + "/models").json()
    options = page.eval_on_selector_all(
        "#model option", "os => os.map(o => ({value: o.value, text: o.textContent}))")
    assert [o["value"] for o in options] == [m["name"] for m in served["models"]]
    assert sorted(o["value"] for o in options) == sorted([SPRITES, DEFAULT, BARE])
    for option, listed in zip(options, served["models"], strict=True):
        assert option["text"].startswith(listed["name"]) and listed["domain"] in option["text"]
    assert page.input_value("#model") == served["default"] == DEFAULT
    by_name = {m["name"]: m for m in served["models"]}
    assert by_name[DEFAULT]["domain"] in page.inner_text("#model-info")
    assert by_name[SPRITES]["motion_dim"] != by_name[DEFAULT]["motion_dim"]  # told apart below
    assert f"a motion code of {by_name[DEFAULT]['motion_dim']} per frame" in \
        page.inner_text("#model-info")

    def buttons():
        return page.eval_on_selector_all(".samples[data-slot=a] button",
                                         "bs => bs.map(b => [b.dataset.sample, b.title])")

    page.select_option("#model", SPRITES)
    sprites = by_name[SPRITES]
    assert buttons() == [[s["url"].rsplit("/", 1)[1], s["label"]] for s in sprites["samples"]]
    assert sprites["domain"] in page.inner_text("#model-info")
    assert f"an appearance code of {sprites['appearance_dim']} numbers, a motion code of " \
        f"{sprites['motion_dim']} per frame" in page.inner_text("#model-info")
    assert page.inner_text(".frame-size") == str(sprites["frame_size"])
    assert page.get_attribute("#manifest-link", "href") == f"/models/{SPRITES}"
    assert page.is_hidden(".slot[data-slot=a] .no-samples")

    page.select_option("#model", BARE)  # no samples: none shown, uploads still work
    assert buttons() == []
    assert page.is_visible(".slot[data-slot=a] .no-samples")
    assert page.eval_on_selector_all("#generate-source option", "os => os.length") == 0
    asked = model_requests(page)
    page.set_input_files("#file-a", str(SAMPLES[0]))
    page.set_input_files("#file-b", str(SAMPLES[1]))
    with page.expect_response(lambda r: "/swap?" in r.url) as answer:
        page.click("#swap-button")
    assert answer.value.status == 200 and answer.value.headers["x-vdis-model"] == BARE
    decoded(page, "#result-ab")
    assert len(asked) == 2 and all(f"model={BARE}" in url for url in asked), asked
    # a model exported without domain statistics says so, quietly (no warning)
    assert answer.value.headers["x-vdis-domain"] == "unknown"
    unknown = page.inner_text("#domain-ab")
    assert unknown.startswith(f"{BARE} cannot measure the distance from these uploads"), unknown
    assert page.get_attribute("#domain-ab", "class") == "domain unknown"
    # another model's results are not this one's: choosing again clears them
    page.select_option("#model", DEFAULT)
    assert page.is_hidden("#result-ab") and not page.get_attribute("#result-ab", "src")
    assert len(buttons()) == len(by_name[DEFAULT]["samples"])


def test_every_request_names_the_chosen_model(page):
    page.select_option("#model", SPRITES)
    asked = model_requests(page)
    models_answered = []
    page.on("response", lambda r: models_answered.append(r.headers.get("x-vdis-model"))
            if model_call(r.url) else None)
    swap_samples(page, 0, 1)
    decoded(page, "#result-ba")
    generate_from_a(page, 1)
    decoded(page, "#generated")
    tick_only_the_slots(page)
    page.click("#grid-button")
    page.wait_for_function("document.querySelectorAll('#grid td video').length === 4",
                           timeout=TIMEOUT_MS)
    paths = [url.split("?")[0].rsplit("/", 1)[1] for url in asked]
    assert sorted(paths) == ["decode"] * 4 + ["encode"] * 2 + ["generate"] + ["swap"] * 2
    assert all(f"model={SPRITES}" in url for url in asked), asked
    page.wait_for_load_state("networkidle")
    assert models_answered == [SPRITES] * len(asked)


def test_a_natural_clip_gets_the_sprites_models_warning_and_a_sample_none(page, tmp_path):
    from tests.service.videos import encode, photo_pan

    photo = tmp_path / "photo.mp4"
    photo.write_bytes(encode(photo_pan("astronaut")))
    page.select_option("#model", SPRITES)
    page.set_input_files("#file-a", str(photo))
    page.click(".samples[data-slot=b] button >> nth=0")
    answers = []  # the two swaps' headers, in the order they come
    page.on("response", lambda r: answers.append(r.headers) if "/swap?" in r.url else None)
    page.click("#swap-button")
    decoded(page, "#result-ab")
    texts = []
    for box in ("#domain-ab", "#domain-ba"):  # each result has both uploads in it
        note = page.wait_for_selector(f"{box}.out", state="visible", timeout=TIMEOUT_MS)
        texts.append(note.inner_text())
        assert texts[-1].startswith(f"Outside what {SPRITES} knows. "), texts[-1]
        assert "(photo.mp4) is unlike what model" in texts[-1], texts[-1]
    assert len(answers) == 2
    for headers in answers:  # the service's own words, beside the result they are about
        assert headers["x-vdis-domain"] == "out" and float(headers["x-vdis-domain-score"]) > 1
        assert any(headers["x-vdis-warning"] in text for text in texts)
    box = page.eval_on_selector("#domain-ab", "e => { const s = getComputedStyle(e);"
                                " return [s.borderLeftWidth, s.backgroundColor]; }")
    assert box[0] == "4px" and box[1] != "rgba(0, 0, 0, 0)"  # visibly set apart
    assert page.evaluate("document.querySelectorAll('[role=alert]:not([hidden])').length") == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-page-out-of-domain.png"), full_page=True)

    generate_from_a(page, 1)
    note = page.wait_for_selector("#domain-generated.out", state="visible", timeout=TIMEOUT_MS)
    assert "(photo.mp4) is unlike what model" in note.inner_text()

    tick_only_the_slots(page)
    page.click("#grid-button")  # the photo's row and column are marked, the sample's not
    note = page.wait_for_selector("#domain-grid.out", state="visible", timeout=TIMEOUT_MS)
    assert "Video A (photo.mp4) scores " in note.inner_text()
    assert "Video B" not in note.inner_text()
    assert page.evaluate("document.querySelectorAll('#grid th.out').length") == 2

    page.click(".samples[data-slot=a] button >> nth=1")  # two of the model's own clips
    page.click("#swap-button")
    decoded(page, "#result-ab")
    page.wait_for_selector("#swap-status .busy", state="detached", timeout=TIMEOUT_MS)
    assert [headers["x-vdis-domain"] for headers in answers[2:]] == ["in", "in"]
    for box in ("#domain-ab", "#domain-ba"):
        assert page.is_hidden(box) and page.inner_text(box) == ""
