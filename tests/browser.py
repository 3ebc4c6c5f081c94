"""Look at the built book as a reader would: headless Chromium (Debian's ``chromium`` package).

``pages_report`` loads each page, lets its JavaScript run, and reads the DOM it ends with: the
images on the page (each decoded from disk and checked for being non-blank) and the ipywidgets
views embedded in it. ``screenshot`` keeps a picture of a page for people to look at.
Used by tests/test_notebooks.py and by ``make book`` (``python tests/browser.py``).
"""

from __future__ import annotations

import argparse
import base64
import io
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
          "--no-first-run", "--disable-dev-shm-usage", "--virtual-time-budget=5000"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.widget_views = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img" and a.get("src"):
            self.images.append(a["src"] or "")
        if tag == "script" and a.get("type") == WIDGET_VIEW:
            self.widget_views += 1


@dataclass
class PageReport:
    page: str
    images: list[str] = field(default_factory=list)
    blank: list[str] = field(default_factory=list)  # missing, unreadable or single-colour
    widget_views: int = 0

    @property
    def figures(self) -> int:
        return len(self.images) - len(self.blank)


def rendered_dom(chromium: str, page: Path, timeout: int = 120) -> str:
    out = subprocess.run([chromium, *_FLAGS, "--dump-dom", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0 or "<html" not in out.stdout:
        raise RuntimeError(f"chromium could not render {page}: {out.stderr[-2000:]}")
    return out.stdout


def _load(src: str, page: Path) -> Image.Image:
    if src.startswith("data:"):
        return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    url = urlparse(src)
    if url.scheme not in ("", "file"):
        raise ValueError(f"remote image {src}")
    path = Path(unquote(url.path)) if url.scheme == "file" else page.parent / unquote(url.path)
    return Image.open(path)


def _blank(src: str, page: Path) -> bool:
    try:
        with _load(src, page) as im:
            flat = all(lo == hi for lo, hi in im.convert("RGB").getextrema())
            return im.width * im.height == 0 or flat
    except Exception:  # noqa: BLE001 - any failure to decode is a broken figure
        return True


def page_report(chromium: str, page: Path) -> PageReport:
    parser = _Collect()
    parser.feed(rendered_dom(chromium, page))
    # theme icons and logos are not figures: keep the images of the page's own content
    images = [s for s in parser.images if "_images/" in s or s.startswith("data:image")]
    return PageReport(str(page), images, [s for s in images if _blank(s, page)], parser.widget_views)


def screenshot(chromium: str, page: Path, out_png: Path, width: int = 1280, height: int = 2400) -> Path:
    out_png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([chromium, *_FLAGS, f"--window-size={width},{height}",
                    f"--screenshot={out_png.resolve()}", page.resolve().as_uri()],
                   capture_output=True, timeout=120, check=True)
    return out_png


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="check the built book's pages in headless Chromium")
    p.add_argument("html", type=Path, help="the built book, e.g. _build/html")
    p.add_argument("pages", nargs="*", help="pages relative to it (default: every page of --toc)")
    p.add_argument("--toc", type=Path, default=Path("_toc.yml"), help="the book's table of contents")
    p.add_argument("--screenshot", help="page to photograph into <html>/../screenshots/, if built")
    args = p.parse_args(argv)
    if not args.pages:
        from styo.book import toc

        args.pages = [f"{f}.html" for f in toc.documents(args.toc)]
    chromium = find_chromium()
    if chromium is None:
        print("no chromium on PATH (apt-get install chromium): page check skipped")
        return 0
    bad = 0
    for rel in args.pages:
        r = page_report(chromium, args.html / rel)
        print(f"{rel}: {r.figures} figures, {len(r.blank)} blank, {r.widget_views} widget views")
        bad += bool(r.blank)
    if args.screenshot and not (args.html / args.screenshot).exists():
        print(f"no {args.screenshot} in this build: no screenshot")
    elif args.screenshot:
        shot = args.html.parent / "screenshots" / (Path(args.screenshot).stem + ".png")
        print(f"screenshot: {screenshot(chromium, args.html / args.screenshot, shot)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
