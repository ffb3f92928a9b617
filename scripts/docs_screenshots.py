"""Sphinx extension: screenshots for the docs, taken in headless Chromium at build time.

``docs/_generated/lazy_repr.png`` is ``LazyCollection._repr_html_()`` of a small
collection as a browser renders it (what a notebook shows). It is made again on
every build, so the picture follows the code; it is not committed. A missing
Chromium fails the build (``scripts/install-chromium`` installs it).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from docs_browser import Browser

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>LazyCollection</title>
<style>body {{ margin: 0; font-family: "DejaVu Sans", sans-serif; font-size: 14px;
background: #fff; }} #shot {{ display: inline-block; padding: 12px; min-width: 640px; }}</style>
</head><body><div id="shot">{body}</div></body></html>
"""


def lazy_repr_html() -> str:
    """The HTML repr of a lazy collection of 12 monthly partitions, 3 selected."""
    import numpy

    import dask_zcollection as dzc
    from dask_zcollection.demo import altimetry_schema

    schema = altimetry_schema(width=16, chunks=4096)
    url = "memory://docs-screenshot-lazy-repr"
    col = dzc.create_collection(
        url,
        schema=schema,
        axis="time",
        partitioning=dzc.partitioning.Date(("time",), resolution="M"),
        overwrite=True,
    )
    n = 365 * 24
    time = numpy.datetime64("2024-01-01", "ns") + numpy.arange(n) * numpy.timedelta64(1, "h")
    rng = numpy.random.default_rng(0)
    ssh = rng.normal(0, 0.1, (n, 16)).astype("float32")
    col.insert({"time": time, "ssh": ssh, "x_ac": numpy.arange(16, dtype="int16")})
    lazy = dzc.read_collection(url).filter("month >= 3 and month <= 5")
    return str(lazy._repr_html_())


async def _shoot(html_file: Path, out: Path) -> tuple[int, int]:
    async with Browser(width=900, height=700) as browser:
        return await browser.screenshot(html_file.as_uri(), out, selector="#shot")


def make_screenshots(out_dir: Path) -> list[Path]:
    """Render the pages and save their PNGs into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "lazy_repr.png"
    with tempfile.TemporaryDirectory(prefix="dzc-shot-") as tmp:
        page = Path(tmp) / "lazy_repr.html"
        # Every collapsible section open, so that the picture shows them.
        body = lazy_repr_html().replace("<details>", "<details open>")
        page.write_text(PAGE.format(body=body), encoding="utf-8")
        asyncio.run(_shoot(page, out))
    return [out]


def _on_builder_inited(app: Any) -> None:
    from sphinx.util import logging

    out_dir = Path(app.srcdir) / "_generated"
    for png in make_screenshots(out_dir):
        logging.getLogger(__name__).info(f"screenshot: {png.relative_to(app.srcdir)}")


def setup(app: Any) -> dict[str, Any]:
    """Register the screenshot step (Sphinx entry point)."""
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
