"""The review page end to end in headless Chromium (Playwright driving /usr/bin/chromium): the grid
shows the queue with boxes and scores, keyboard shortcuts store decisions durably, and the next
release build applies them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from passkit.review.server import make_server
from passkit.review.store import ReviewStore

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.slow


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (make browser)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def test_review_page_keyboard_decisions_reach_the_release(review_build, browser):  # noqa: F811
    from passkit.build import build

    base, spec = review_build
    work = spec.work_dir(base)
    with ReviewStore.of(work) as s:  # start from an empty decision table
        for k in list(s.decisions()):
            s.undo(k)
    server, app = make_server(work, port=0, sample=1, seed=3, reviewer="playwright")
    server.start()
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{server.port}/")
        page.wait_for_selector(".card")
        cards = page.locator(".card")
        n = cards.count()
        assert n == len(app.items) >= 3
        keys = [cards.nth(i).get_attribute("data-key") for i in range(n)]
        assert keys == [it.key for it in app.items]
        assert page.locator(".box").count() >= 1  # detector boxes drawn over the images
        assert "mtcnn" in cards.nth(0).inner_text() or "hog" in cards.nth(0).inner_text()  # scores shown
        assert page.locator(".kind", has_text="spot check").count() == 1
        # every image actually loads (waited for: under load the cards appear before their images)
        page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=20_000)
        assert page.evaluate("Array.from(document.images).every(i => i.naturalWidth > 0)")
        assert page.locator("#progress").inner_text() == f"0 / {n} decided"

        page.keyboard.press("n")  # first card: no person, moves on
        page.wait_for_selector(f'.card[data-key="{keys[0]}"][data-decision="no_person"]')
        page.keyboard.press("p")  # second: person
        page.wait_for_selector(f'.card[data-key="{keys[1]}"][data-decision="person"]')
        page.keyboard.press("j")  # skip the third
        page.keyboard.press("p")
        page.wait_for_selector(f'.card[data-key="{keys[3]}"][data-decision="person"]')
        page.keyboard.press("k")
        page.keyboard.press("u")  # undo what the current card had (the third: nothing) -> stays open
        page.locator(f'.card[data-key="{keys[1]}"] button[data-action="no_person"]').click()  # change mind
        page.wait_for_selector(f'.card[data-key="{keys[1]}"][data-decision="no_person"]')
        assert page.locator("#progress").inner_text() == f"3 / {n} decided"

        page.reload()  # durable: the server's store, not the page, holds the decisions
        page.wait_for_selector(f'.card[data-key="{keys[3]}"][data-decision="person"]')
        assert page.locator("#progress").inner_text() == f"3 / {n} decided"
        assert errors == []
    finally:
        server.stop()
        app.store.close()

    with ReviewStore.of(work) as s:
        d = s.decisions()
    assert {k: v.label for k, v in d.items()} == {keys[0]: "no_person", keys[1]: "no_person", keys[3]: "person"}
    assert d[keys[0]].reviewer == "playwright"

    build(spec, base=base)
    release = spec.release_dir(base)
    index = {r["key"] for r in pq.read_table(release / "index.parquet").to_pylist()}
    rejected = {r["key"]: r["reason"] for r in pq.read_table(release / "rejected.parquet").to_pylist()}
    assert keys[0] in index and keys[1] in index
    assert rejected[keys[3]] == "human_review"
    assert rejected[keys[2]] in ("pending_review", "human_review") or keys[2] in index
