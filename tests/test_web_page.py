"""The page at / in a real browser: headless Chromium (Debian's, through Playwright's executable_path) against
`python -m service` on a free port, serving the committed models, with real photos.

Skipped only where Playwright is not importable or no Chromium is installed (`make test` installs Debian's).
FACEDET_UPDATE_SCREENSHOT=1 also writes the screenshot the README shows to reports/web_page.png.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.utils.server import ServerProcess, serving

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
SCREENSHOT = REPO / "reports" / "web_page.png"
# Flags Debian's chromium needs here: no sandbox as root in a container, and no background traffic, which
# would otherwise flood a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Two LFW faces pasted into china.jpg: both models find exactly these two at the default threshold.
FACES = ((0, (40, 120)), (5, (320, 100)))
SIDE = 112

pytestmark = pytest.mark.skipif(not (MODELS / "manifest.json").exists(),
                                reason="models/manifest.json is not there yet (training exports it)")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium installed: `make test` installs Debian's chromium where apt-get is available")


def photo_with_two_faces() -> bytes:
    """A real photo (scikit-learn's china.jpg at 480x360) with LFW faces 0 and 5 pasted in."""
    from skimage import data
    from sklearn.datasets import load_sample_image

    scene = Image.fromarray(load_sample_image("china.jpg")).resize((480, 360))
    for i, at in FACES:
        face = Image.fromarray((data.lfw_subset()[i] * 255).round().astype(np.uint8)).convert("RGB")
        scene.paste(face.resize((SIDE, SIDE), Image.Resampling.BILINEAR), at)
    buf = io.BytesIO()
    scene.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving({"FACEDET_MODELS_DIR": str(MODELS)}, tmp_path_factory.mktemp("web") / "server.log") as proc:
        yield proc


@pytest.fixture(scope="module")
def browser() -> Iterator:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    executable = chromium()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server: ServerProcess) -> Iterator:
    """A fresh page at / that records every request it makes and every error its script throws."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.requests, page.script_errors = [], []
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("pageerror", lambda e: page.script_errors.append(str(e)))
    page.goto(server.url + "/")
    page.wait_for_selector(".model")  # /v1/models answered: the slider starts at the service's threshold
    yield page
    # Offline: nothing but this service was asked for anything; and the script never threw.
    foreign = [u for u in page.requests if urlsplit(u).scheme in ("http", "https")
               and urlsplit(u).netloc != urlsplit(server.url).netloc]
    assert foreign == [] and page.script_errors == []
    context.close()


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "two_faces.png"
    path.write_bytes(photo_with_two_faces())
    return path


def upload(page, path: Path) -> None:
    page.set_input_files("#file", str(path))
    page.wait_for_selector(f'.photo[aria-busy="false"]:has(h3:text-is("{path.name}"))')


def detect(server: ServerProcess, path: Path, model: str, threshold: float) -> list[dict]:
    response = httpx.post(f"{server.url}/v1/detect", params={"model": model, "threshold": threshold},
                          files={"image": (path.name, path.read_bytes())}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["results"][0]["faces"]


def drawn(page, model: str) -> list[dict]:
    """The visible face boxes of a model's view: score, and box in photo px (from their % placement)."""
    return page.eval_on_selector_all(f".view.{model} .face", """buttons => buttons.filter(b => b.checkVisibility())
      .map(b => {
        const img = b.parentElement.querySelector('img');
        const w = img.naturalWidth, h = img.naturalHeight, s = b.style;
        return {score: Number(b.dataset.score), x: parseFloat(s.left) * w / 100, y: parseFloat(s.top) * h / 100,
                width: parseFloat(s.width) * w / 100, height: parseFloat(s.height) * h / 100};
    })""")


def iou(a: dict, b: dict) -> float:
    x0, y0 = max(a["x"], b["x"]), max(a["y"], b["y"])
    x1, y1 = min(a["x"] + a["width"], b["x"] + b["width"]), min(a["y"] + a["height"], b["y"] + b["height"])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a["width"] * a["height"] + b["width"] * b["height"] - inter)


def assert_drawn_as_detected(page, server: ServerProcess, photo: Path, threshold: float) -> int:
    """Per model, the boxes drawn are /v1/detect's faces at this threshold: same count, same scores, same place
    (the page asked once at the slider's floor; the faces at a higher threshold are a subset of those)."""
    for model in ("dbvae", "cnn"):
        faces, boxes = detect(server, photo, model, threshold), drawn(page, model)
        assert len(boxes) == len(faces), (model, threshold, boxes, faces)
        assert [b["score"] for b in boxes] == pytest.approx([f["score"] for f in faces], abs=1e-6)
        for b, f in zip(boxes, faces):
            assert [b[k] for k in ("x", "y", "width", "height")] == pytest.approx(
                [f["box"][k] for k in ("x", "y", "width", "height")], abs=0.01), (b, f)
        caption = page.text_content(f".view.{model} .count")
        assert caption.split(": ")[1].startswith(f"{len(faces)} face"), caption
    return len(detect(server, photo, "dbvae", threshold))


def save_screenshot(page, tmp_path: Path, name: str, **options) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), **options)
    return path


def test_upload_draws_a_box_on_every_face_found_and_the_slider_refilters(page, server, photo, tmp_path) -> None:
    models = httpx.get(f"{server.url}/v1/models").json()
    assert page.input_value("#threshold") == str(models["localiser"]["threshold"])  # starts at the service's
    upload(page, photo)
    found = assert_drawn_as_detected(page, server, photo, models["localiser"]["threshold"])
    # Exactly the two pasted faces, for both models, at the service's threshold.
    for model in ("dbvae", "cnn"):
        boxes = drawn(page, model)
        assert len(boxes) == len(FACES), (model, boxes)
        assert all(any(iou(b, {"x": x, "y": y, "width": SIDE, "height": SIDE}) >= 0.5 for b in boxes)
                   for _, (x, y) in FACES), (model, boxes)
    assert found == len(FACES)
    asked = sum("/v1/detect" in u for u in page.requests)
    assert asked == 2  # once per model

    # Both faces score just under 1 (0.99999 and more): at 1.000 the page hides them, as the service does.
    page.fill("#threshold", "1")
    assert page.text_content("#threshold-value") == "1.000"
    assert assert_drawn_as_detected(page, server, photo, 1.0) == 0
    page.fill("#threshold", "0.5")
    assert page.text_content("#threshold-value") == "0.500"
    assert assert_drawn_as_detected(page, server, photo, 0.5) == found
    assert sum("/v1/detect" in u for u in page.requests) == asked, "the slider must not upload again"

    page.check('input[name="view"][value="cnn"]')
    assert page.is_hidden(".view.dbvae") and page.is_visible(".view.cnn")
    page.check('input[name="view"][value="both"]')
    page.fill("#threshold", str(models["localiser"]["threshold"]))
    shot = save_screenshot(page, tmp_path, "web_page.png", full_page=False)
    if os.environ.get("FACEDET_UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(SCREENSHOT), full_page=True, clip=_clip(page, "header", "#try"))
    with Image.open(shot) as im:
        assert im.size == (1280, 900)


def _clip(page, first: str, last: str) -> dict:
    """The page from the top of `first` to the bottom of `last`, in page coordinates (bounding boxes are
    in the viewport's, which scrolls): the README's pictures."""
    top, bottom = page.locator(first).bounding_box(), page.locator(last).bounding_box()
    y = top["y"] + page.evaluate("window.scrollY")
    return {"x": 0, "y": y, "width": 1280, "height": bottom["y"] + bottom["height"] - top["y"]}


def test_a_face_selected_by_keyboard_shows_its_reconstruction(page, server, photo) -> None:
    size = httpx.get(f"{server.url}/v1/models").json()["input"]["size"]
    upload(page, photo)
    first = page.locator(".view.dbvae .face:not([hidden])").first
    first.focus()
    page.keyboard.press("Enter")
    assert first.get_attribute("aria-pressed") == "true"
    page.wait_for_function("() => document.getElementById('reconstruction').naturalWidth > 0")
    natural = page.eval_on_selector("#reconstruction", "img => [img.naturalWidth, img.naturalHeight]")
    assert natural == [size, size]
    assert "face 1 of two_faces.png" in page.text_content("#inside-label")


def test_two_faces_of_one_photo_morph_into_frames_and_a_gif(page, server, photo, tmp_path) -> None:
    upload(page, photo)
    faces = page.locator(".view.dbvae .face:not([hidden])")
    faces.nth(0).click()
    page.click("#use-a")
    faces.nth(1).click()
    page.click("#use-b")
    # Too many frames first: the service's refusal shows beside the button, in its own words.
    blob = photo.read_bytes()
    refused = httpx.post(f"{server.url}/v1/morph", params={"steps": 1000, "format": "json"},
                         files={"a": ("a.png", blob), "b": ("b.png", blob)})
    assert refused.status_code == 422
    page.fill("#steps", "1000")
    page.click("#morph-go")
    page.wait_for_selector("#morph-error:not(:empty)")
    assert refused.json()["detail"] in page.text_content("#morph-error")

    steps = 6
    page.fill("#steps", str(steps))
    page.click("#morph-go")
    page.wait_for_selector("#morph-error:empty", state="attached")
    page.wait_for_selector("#morph-result:not([hidden])")
    page.wait_for_function("() => document.getElementById('morph-gif').naturalWidth > 0")
    frames = page.eval_on_selector_all("#frames img", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
    size = httpx.get(f"{server.url}/v1/models").json()["input"]["size"]
    assert frames == [size] * steps
    assert page.get_attribute("#frame", "max") == str(steps - 1)
    page.fill("#frame", str(steps - 1))
    assert page.text_content("#frame-value") == f"{steps} of {steps}"
    assert page.get_attribute("#morph-frame", "src") == page.get_attribute(f"#frames li:nth-child({steps}) img", "src")
    if os.environ.get("FACEDET_UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(SCREENSHOT.with_name("web_page_morph.png")), full_page=True,
                        clip=_clip(page, "#inside", "#morph"))


def test_a_text_file_shows_the_service_problem_detail(page, server, tmp_path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo\n")
    response = httpx.post(f"{server.url}/v1/detect", files={"image": (notes.name, notes.read_bytes(), "text/plain")})
    assert response.status_code == 415 and response.headers["content-type"] == "application/problem+json"
    detail = response.json()["detail"]
    page.set_input_files("#file", str(notes))
    error = page.wait_for_selector('.photo [role="alert"]')
    assert detail in error.text_content() and detail in page.text_content("#status")
    assert "Traceback" not in page.content()


def test_the_models_panel_shows_what_v1_models_reports(page, server) -> None:
    body = httpx.get(f"{server.url}/v1/models").json()
    page.wait_for_selector(".model")
    panel = page.text_content("#models-body")
    for model in body["models"]:
        assert model["version"] in panel
        assert all(g["providers"][0] in panel for g in model["graphs"].values())
        assert f"{model['metrics']['val']['balanced_accuracy']:.3f}" in panel
    assert panel.count("No fairness card") == sum(not m.get("fairness") for m in body["models"])
    rarity = sum(bool((m.get("fairness") or {}).get("by_rarity")) for m in body["models"])  # the models' own cards
    assert panel.count("Recall by rarity") == panel.count("10 (rarest)") == rarity


def test_the_models_panel_shows_per_group_figures_when_the_manifest_has_them(page, server) -> None:
    """`fairness` in /v1/models is optional; added here to the real answer, in the shape training writes
    (training/fairness.py) for one model and with a flat data entry for the other, the panel shows both."""
    group = {"kind": "group", "faces": 100, "largest_difference": 0.125, "largest_difference_ci": [0.05, 0.25],
             "smallest_ratio": 0.875, "smallest_ratio_ci": None, "bins": [
                 {"name": "darker", "faces": 40, "recall": 0.875, "recall_ci": [0.75, 0.95], "mean_score": 0.9,
                  "mean_score_ci": [0.85, 0.93]},
                 {"name": "lighter", "faces": 60, "recall": 1.0, "recall_ci": [1.0, 1.0], "mean_score": None,
                  "mean_score_ci": None}]}
    rarity = {**group, "kind": "rarity", "bins": [{**group["bins"][0], "name": "1 (commonest)"}]}
    boot = {"resamples": 1000, "seed": 0, "confidence": 0.95}
    cards = [{"data": {"evaluated": "the held-out validation split",
                       "training_data": {"source": "builtin", "faces": "100 LFW crops", "licence": "unclear"}},
              "threshold": 0.5, "bootstrap": boot, "by_rarity": rarity, "by_group": group},
             {"data": {"source": "a folder", "faces": 100, "licence": "CC BY 4.0"}, "threshold": 0.5,
              "bootstrap": boot, "by_rarity": rarity, "by_group": None}]

    def with_fairness(route) -> None:
        body = route.fetch().json()
        for model, card in zip(body["models"], cards):
            model["fairness"] = copy.deepcopy(card)
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route("**/v1/models", with_fairness)
    page.reload()
    page.wait_for_selector(".model table:nth-of-type(3)")
    first, second = page.locator(".model").nth(0), page.locator(".model").nth(1)
    facts = first.locator(".data").inner_text().split("\n")
    assert facts == ["Figures computed on", "the held-out validation split", "Training data", "builtin", "Faces",
                     "100 LFW crops", "Licence", "unclear"]
    rows = first.locator("table").nth(2).locator("tbody tr").all_text_contents()
    assert rows == ["darker400.875 [0.750, 0.950]0.900 [0.850, 0.930]", "lighter601.000 [1.000, 1.000]n/a"]
    text = first.text_content()
    assert "Recall by group" in text and "95% intervals, 1000 resamples" in text
    assert "difference 0.125 [0.050, 0.250], smallest ratio 0.875." in text
    assert second.locator(".data").inner_text().split("\n") == ["Training data", "a folder", "Faces", "100",
                                                                  "Licence", "CC BY 4.0"]
    assert "Recall by rarity" in second.text_content()
    assert "Rarity decile" in second.locator("table").nth(2).text_content()


def test_usable_at_phone_width_and_every_control_labelled(browser, server, photo, tmp_path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    page.goto(server.url + "/")
    upload(page, photo)
    page.wait_for_selector(".model")
    # Nothing wider than the screen, so nothing needs sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    unlabelled = page.eval_on_selector_all("input, button, select, textarea", """els => els
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.outerHTML)""")
    assert unlabelled == []
    save_screenshot(page, tmp_path, "web_page_phone.png", full_page=True)
    context.close()


def test_the_page_is_served_offline_and_kept_out_of_the_api_document(server) -> None:
    """No browser needed: what / and its files answer, and that the OpenAPI document and /docs are unchanged."""
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing linked from outside
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = httpx.get(f"{server.url}/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert "http://" not in response.text and "https://" not in response.text
    missing = httpx.get(f"{server.url}/static/..%2Fmain.py")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/static") for p in paths) and "/v1/detect" in paths
    assert httpx.get(f"{server.url}/docs").status_code == 200
