"""A person in a real browser: Debian's Chromium driven by Playwright against the app on localhost."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import ImageOps

from app_server import AppServer

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if not shutil.which(CHROMIUM) and not os.environ.get("CI"):
        pytest.skip("Debian's chromium is not installed (bash setup.sh --test installs it)")
    from playwright.sync_api import sync_playwright

    server = AppServer(tmp_path_factory.mktemp("browser") / "gradio-cache")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(server.url)
        page.wait_for_selector("#generate", timeout=60_000)
        yield page
        browser.close()
    server.stop()


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory, astronaut):
    folder = tmp_path_factory.mktemp("browser-photos")
    astronaut.save(folder / "me.png")
    ImageOps.mirror(astronaut).save(folder / "friend.png")
    return folder / "me.png", folder / "friend.png"


def test_single_portrait_in_the_browser(page, photo_files):
    ARTIFACTS.mkdir(exist_ok=True)
    assert "tiny untrained model" in page.locator("#banner").inner_text()
    page.locator("input[type=file]").first.set_input_files(str(photo_files[0]))
    page.get_by_text("Face found").wait_for(timeout=60_000)
    page.get_by_label("Prompt", exact=True).fill("a photo of a woman in the snow")
    page.get_by_text("The face goes to the highlighted word").wait_for(timeout=30_000)
    page.locator("#generate").click()
    page.locator("#gallery img").first.wait_for(timeout=120_000)
    assert "1 image in" in page.locator("#info").inner_text()
    page.screenshot(path=str(ARTIFACTS / "single-portrait.png"), full_page=True)


def test_two_people_in_the_browser(page, photo_files):
    page.get_by_role("tab", name="Two people").click()
    uploads = page.locator("#pair_tab input[type=file]")
    uploads.nth(0).set_input_files(str(photo_files[0]))
    uploads.nth(1).set_input_files(str(photo_files[1]))
    page.get_by_text("Face found").nth(1).wait_for(timeout=60_000)
    page.locator("#generate_pair").click()
    page.locator("#pair_gallery img").first.wait_for(timeout=120_000)
    assert "A: the first 'man'" in page.locator("#pair_info").inner_text()
    page.screenshot(path=str(ARTIFACTS / "two-people.png"), full_page=True)


def test_creative_tools_are_reachable(page):
    page.get_by_role("tab", name="Single portrait").click()
    assert page.get_by_label("Style", exact=True).first.is_visible()  # beside Size, not under Advanced
    assert page.get_by_text("More photos of you (up to 3, averaged)").is_visible()
    page.get_by_role("tab", name="Your photo").click()
    page.locator("#generate_edit").wait_for(timeout=30_000)
    assert page.get_by_text("The face in my photo").is_visible()
    page.screenshot(path=str(ARTIFACTS / "your-photo.png"), full_page=True)
