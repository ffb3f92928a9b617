"""The docs' browser check (``scripts/docs_browser.py``) on a small site in headless Chromium.

It must pass a sound page and name what is wrong with each broken one. Chromium
comes from ``scripts/install-chromium``: without it this test fails, it is never
skipped.
"""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import docs_browser  # noqa: E402

# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def page(body: str, head: str = '<link rel="stylesheet" href="style.css">') -> str:
    """A page shaped like a Sphinx one: a stylesheet, Sphinx's options script, an article."""
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>t</title>"
        f"<link rel='icon' href='data:,'>{head}"
        "<script>var DOCUMENTATION_OPTIONS = {};</script></head><body>"
        f"<article class='bd-article'><p>Some text long enough to be an article.</p>{body}"
        "</article></body></html>"
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "style.css").write_text("p { color: #222; }")
    (tmp_path / "pic.png").write_bytes(PNG)
    pages = {
        "good.html": page("<img src='pic.png' alt='a picture'>"),
        "missing_image.html": page("<img src='nowhere.png' alt='gone'>"),
        "console_error.html": page("<script>console.error('boom from the page')</script>"),
        "exception.html": page("<script>undefinedFunction()</script>"),
        "no_stylesheet.html": page("", head='<link rel="stylesheet" href="missing.css">'),
        "blank.html": "<!DOCTYPE html><html><head><title>blank</title></head><body></body></html>",
    }
    for name, text in pages.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_browser_check_passes_a_sound_page_and_names_each_broken_one(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = [
        "good.html",
        "missing_image.html",
        "console_error.html",
        "exception.html",
        "no_stylesheet.html",
        "blank.html",
    ]
    # The command line, as ./run docs runs it (one browser for every page).
    status = docs_browser.main(
        ["check", str(site), "--settle", "0.3", *(a for n in names for a in ("--only", n))]
    )
    out = capsys.readouterr().out
    assert status == 1
    assert "browser check: 1/6 pages ok" in out
    reports = _parse(out)

    assert reports["good.html"] == ("ok", 1, [])

    status_, _, missing = reports["missing_image.html"]
    assert status_ == "BROKEN"
    assert any(p.startswith("image did not load:") and "nowhere.png" in p for p in missing)
    assert any(p.startswith("HTTP 404:") and "nowhere.png" in p for p in missing)

    assert "console.error: boom from the page" in reports["console_error.html"][2]

    exception = reports["exception.html"][2]
    assert any(p.startswith("uncaught exception:") and "undefinedFunction" in p for p in exception)

    stylesheet = reports["no_stylesheet.html"][2]
    assert any(p.startswith("HTTP 404:") and "missing.css" in p for p in stylesheet)
    assert "no stylesheet loaded" in stylesheet

    blank = reports["blank.html"][2]
    assert "no article text (a blank or broken page)" in blank
    assert "Sphinx's scripts did not run (no DOCUMENTATION_OPTIONS)" in blank


def _parse(out: str) -> dict[str, tuple[str, int, list[str]]]:
    """Page name -> (status, images, problems) from the command's report."""
    reports: dict[str, tuple[str, int, list[str]]] = {}
    name = ""
    for line in out.splitlines():
        if line.startswith(("ok ", "BROKEN ")):
            status, url, rest = line.split(maxsplit=2)
            name = Path(url).name
            images = int(rest.rsplit(", ", 1)[1].split()[0])  # "('title', 1 images)"
            reports[name] = (status, images, [])
        elif line.startswith("       - "):
            reports[name][2].append(line.removeprefix("       - "))
    return reports


def test_a_page_that_was_not_built_is_an_error(site: Path) -> None:
    with pytest.raises(docs_browser.BrowserError, match=r"not_there\.html"):
        asyncio.run(docs_browser.check_site(site, ["good.html", "not_there.html"]))


def test_a_missing_chromium_is_an_error_naming_the_install_script(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.setattr(docs_browser, "CANDIDATES", ())
    monkeypatch.setenv("PATH", "")
    with pytest.raises(docs_browser.BrowserError, match="scripts/install-chromium"):
        docs_browser.find_chromium()
    monkeypatch.setenv("CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(docs_browser.BrowserError, match="/nonexistent/chromium"):
        docs_browser.find_chromium()
