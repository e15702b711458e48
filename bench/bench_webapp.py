"""How fast the annotate page shows an image, in system Chromium against a live server.

Measures (1) sign-in to the first image on screen with an empty browser cache (the 3.7 MB
application bundle included), and (2) the time from pressing Enter (submit) to the next item's
image on screen, over several DICOM items (CT, MR, JPEG 2000 compressed). Prints a Markdown table.

    python bench/bench_webapp.py            # needs chromium + playwright (the test extra)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from webapp_support import (
    PASSWORD,
    build_box_project,
    chromium_path,
    live_server,
)


def add_items(workspace: object) -> int:
    """Import pydicom's example images into the ``lesions`` project; return how many."""
    import pydicom.examples

    from truthset.workspace import projects
    from truthset.workspace.medical import Source, ingest_medical

    sources = []
    for name in ("mr", "jpeg2k", "overlay", "palette_color"):
        path = Path(str(pydicom.examples.get_path(name)))
        sources.append(Source(name=path.name, data=path.read_bytes()))
    with workspace.unit("bench") as s:  # type: ignore[attr-defined]
        project = projects.get_project(s, "lesions")
        report = ingest_medical(s, workspace.blobs, workspace.vault, project, sources)  # type: ignore[attr-defined]
    return 1 + len(report.ingested)


def main() -> None:
    """Run the measurement and print the table."""
    from playwright.sync_api import sync_playwright

    browser_path = chromium_path()
    if browser_path is None:
        raise SystemExit("no system chromium")
    with tempfile.TemporaryDirectory() as tmp:
        workspace = build_box_project(Path(tmp))
        n_items = add_items(workspace)
        with workspace, live_server(workspace) as server, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_context(viewport={"width": 1400, "height": 880}).new_page()
            page.goto(server.url + "/annotate?project=lesions")
            page.fill("#username", "ana")
            page.fill("#password", PASSWORD)
            started = time.perf_counter()
            page.click("#sign-in")
            page.wait_for_selector(".work[data-ready='1']", timeout=30000)
            cold = time.perf_counter() - started
            nexts = []
            for _ in range(n_items - 1):
                current = page.get_attribute(".work", "data-item")
                page.keyboard.press("1")
                page.keyboard.press("b")
                box = page.locator("#viewer .viewport").bounding_box()
                assert box is not None
                x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                page.mouse.move(x - 30, y - 30)
                page.mouse.down()
                page.mouse.move(x + 30, y + 30, steps=4)
                page.mouse.up()
                page.wait_for_timeout(300)
                started = time.perf_counter()
                page.keyboard.press("Enter")
                page.wait_for_function(
                    "old => { const w = document.querySelector('.work');"
                    " return w && w.dataset.ready === '1' && w.dataset.item !== old; }",
                    arg=current, timeout=30000)
                nexts.append(time.perf_counter() - started)
            browser.close()
    print("| measurement | n | median s | max s |")
    print("| --- | --- | --- | --- |")
    print(f"| sign-in → first image (cold cache) | 1 | {cold:.2f} | {cold:.2f} |")
    print(f"| submit → next item's image | {len(nexts)} | {statistics.median(nexts):.2f} | "
          f"{max(nexts):.2f} |")


if __name__ == "__main__":
    main()
