"""Headless Chromium for the documentation: the browser check and screenshots.

``python scripts/docs_browser.py check docs/_build/html`` serves the built site
on a loopback HTTP server, loads pages in Debian's Chromium through the
DevTools protocol and fails (exit status 1) on a broken page: an HTTP error, a
missing article or stylesheet, an image that did not load, a request that
failed, a console error or an uncaught exception. A missing Chromium is a
failure too (``scripts/install-chromium`` installs it).

The same client takes the screenshots of the docs (``docs_screenshots.py``).
Only the standard library and aiohttp (the websocket client) are used.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import http.server
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Flags that work in a container as root: no sandbox, no GPU, no network of its own.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)
CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
#: Seconds to wait for the browser to start and for a page to load.
TIMEOUT = 60.0

#: The pages every check loads (relative to the site root); ``--page`` adds more.
DEFAULT_PAGES = ("index.html", "api/dask_zcollection.read_collection.html")


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or a page is broken."""


def find_chromium() -> str:
    """Path of the Chromium binary (``$CHROMIUM`` first); raises when there is none."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:  # named on purpose: a wrong path is an error, not a fallback
        if os.access(explicit, os.X_OK):
            return explicit
        raise BrowserError(f"$CHROMIUM={explicit!r} is not an executable")
    for candidate in (*CANDIDATES, shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BrowserError(
        "Chromium is missing: run scripts/install-chromium (apt-get install chromium)"
    )


class _Cdp:
    """A DevTools protocol session with one page target (flat session mode)."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.session: str | None = None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            else:
                await self.events.put(data)
        for fut in self._pending.values():
            fut.set_exception(BrowserError("the DevTools connection closed"))

    async def send(self, method: str, session: bool = True, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session and self.session:
            msg["sessionId"] = self.session
        fut = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self._ws.send_str(json.dumps(msg))
        reply = await asyncio.wait_for(fut, TIMEOUT)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


@dataclass
class PageReport:
    """What one page load showed."""

    url: str
    title: str = ""
    problems: list[str] = field(default_factory=list)
    images: int = 0

    @property
    def ok(self) -> bool:
        """True when the page loaded with nothing wrong."""
        return not self.problems


# Run in the page once it has loaded: everything a reader would see broken.
_PAGE_PROBE = """(() => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0)
    .map(i => i.currentSrc || i.src);
  const article = document.querySelector("article.bd-article, main article, [role=main]");
  const sheets = Array.from(document.styleSheets).filter(s => {
    try { return s.cssRules.length > 0; } catch (e) { return true; }
  });
  return JSON.stringify({
    title: document.title,
    images: imgs.length,
    broken: broken,
    article_chars: article ? article.innerText.trim().length : 0,
    stylesheets: sheets.length,
    sphinx_js: typeof DOCUMENTATION_OPTIONS !== "undefined",
  });
})()"""


class Browser:
    """One headless Chromium with a DevTools session on a fresh, empty profile."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self.width = width
        self.height = height
        self._proc: subprocess.Popen[str] | None = None
        self._profile: str | None = None
        self._http: Any = None
        self._ws: Any = None
        self.cdp: _Cdp

    async def __aenter__(self) -> Browser:
        import aiohttp  # the websocket client; a dependency of the docs extra

        binary = find_chromium()
        self._profile = tempfile.mkdtemp(prefix="dzc-chromium-")
        self._proc = subprocess.Popen(
            [
                binary,
                *FLAGS,
                f"--user-data-dir={self._profile}",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ws_url = await asyncio.wait_for(asyncio.to_thread(self._devtools_url), TIMEOUT)
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(ws_url, max_msg_size=0)
        self.cdp = _Cdp(self._ws)
        return self

    def _devtools_url(self) -> str:
        assert self._proc is not None and self._proc.stderr is not None
        lines = []
        for line in self._proc.stderr:
            lines.append(line)
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                # Keep draining stderr so that Chromium never blocks on a full pipe.
                threading.Thread(
                    target=functools.partial(_drain, self._proc.stderr), daemon=True
                ).start()
                return found.group(1)
        raise BrowserError("Chromium exited before listening:\n" + "".join(lines[-20:]))

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.cdp.send("Browser.close", session=False)
        with contextlib.suppress(Exception):
            await self.cdp.close()
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self._proc is not None:
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)

    @contextlib.asynccontextmanager
    async def page(self) -> AsyncIterator[_Cdp]:
        """A new tab with the Page, Runtime, Log and Network domains enabled."""
        target = await self.cdp.send("Target.createTarget", session=False, url="about:blank")
        attached = await self.cdp.send(
            "Target.attachToTarget", session=False, targetId=target["targetId"], flatten=True
        )
        self.cdp.session = attached["sessionId"]
        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                await self.cdp.send(f"{domain}.enable")
            await self.cdp.send(
                "Emulation.setDeviceMetricsOverride",
                width=self.width,
                height=self.height,
                deviceScaleFactor=1,
                mobile=False,
            )
            while not self.cdp.events.empty():
                self.cdp.events.get_nowait()
            yield self.cdp
        finally:
            self.cdp.session = None
            await self.cdp.send("Target.closeTarget", session=False, targetId=target["targetId"])

    async def load(self, url: str, settle: float = 1.0) -> PageReport:
        """Load ``url`` in a new tab and report what is broken on it."""
        report = PageReport(url)
        async with self.page() as cdp:
            # Every page as on a first visit: nothing kept from the pages loaded before.
            origin = "/".join(url.split("/", 3)[:3])
            await cdp.send("Storage.clearDataForOrigin", origin=origin, storageTypes="all")
            nav = await cdp.send("Page.navigate", url=url)
            if nav.get("errorText"):
                report.problems.append(f"navigation failed: {nav['errorText']}")
                return report
            events: list[dict[str, Any]] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + TIMEOUT
            loaded_at: float | None = None
            while True:
                now = loop.time()
                if loaded_at is not None and now >= loaded_at + settle:
                    break
                if now >= deadline:
                    report.problems.append("the page did not finish loading")
                    break
                wait = (loaded_at + settle if loaded_at else deadline) - now
                try:
                    event = await asyncio.wait_for(cdp.events.get(), wait)
                except TimeoutError:
                    continue
                events.append(event)
                if event.get("method") == "Page.loadEventFired":
                    loaded_at = loop.time()
            report.problems.extend(_problems(events, url))
            probe = await cdp.send("Runtime.evaluate", expression=_PAGE_PROBE, returnByValue=True)
            seen = json.loads(probe["result"]["value"])
            report.title = seen["title"]
            report.images = seen["images"]
            report.problems.extend(f"image did not load: {src}" for src in seen["broken"])
            if seen["article_chars"] < 20:
                report.problems.append("no article text (a blank or broken page)")
            if not seen["stylesheets"]:
                report.problems.append("no stylesheet loaded")
            if not seen["sphinx_js"]:
                report.problems.append("Sphinx's scripts did not run (no DOCUMENTATION_OPTIONS)")
        return report

    async def screenshot(self, url: str, out: Path, selector: str = "body") -> tuple[int, int]:
        """Save a PNG of the element ``selector`` of ``url``; returns its size in pixels."""
        async with self.page() as cdp:
            await cdp.send("Page.navigate", url=url)
            await asyncio.wait_for(_loaded(cdp), TIMEOUT)
            box = await cdp.send(
                "Runtime.evaluate",
                returnByValue=True,
                expression=(
                    f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                    ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()"
                ),
            )
            x, y, w, h = box["result"]["value"]
            shot = await cdp.send(
                "Page.captureScreenshot",
                format="png",
                captureBeyondViewport=True,
                clip={"x": x, "y": y, "width": w, "height": h, "scale": 1},
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
        return round(w), round(h)


async def _loaded(cdp: _Cdp) -> None:
    while (await cdp.events.get()).get("method") != "Page.loadEventFired":
        pass


def _drain(stream: Any) -> None:
    for _ in stream:
        pass


def _problems(events: list[dict[str, Any]], url: str) -> Iterator[str]:
    """Console errors, exceptions, failed requests and HTTP errors among DevTools events."""
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            yield f"uncaught exception: {text}"
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            yield f"console.{params['type']}: {args}"
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            yield f"console error ({entry['source']}): {entry['text']} {entry.get('url', '')}"
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            yield f"request failed: {params.get('errorText')} ({params.get('type')})"
        elif method == "Network.responseReceived":
            response = params["response"]
            if response["status"] >= 400:
                yield f"HTTP {response['status']}: {response['url']}"


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root`` on a loopback port for the duration; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


async def check_site(
    site: Path, pages: list[str], shots: Path | None = None, settle: float = 1.0
) -> list[PageReport]:
    """Load each page of the built site over loopback HTTP; screenshots into ``shots``.

    ``settle`` is how long to keep listening after a page's load event (for
    errors of scripts that run late).
    """
    missing = [p for p in pages if not (site / p).is_file()]
    if missing:
        raise BrowserError(f"pages not built under {site}: {', '.join(missing)}")
    reports = []
    with serve(site) as base:
        async with Browser() as browser:
            for page in pages:
                report = await browser.load(base + page, settle)
                reports.append(report)
                if shots is not None:
                    await browser.screenshot(
                        base + page, shots / (Path(page).stem + ".png"), selector="html"
                    )
    return reports


def main(argv: list[str] | None = None) -> int:
    """Command line: ``check SITE [--page P ...] [--screenshots DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="load pages of a built site and fail on broken ones")
    check.add_argument("site", type=Path, help="the built HTML (docs/_build/html)")
    check.add_argument("--page", action="append", default=[], help="another page to load")
    check.add_argument(
        "--only", action="append", default=[], help="load this page instead of the default ones"
    )
    check.add_argument("--screenshots", type=Path, help="save a screenshot of each page here")
    check.add_argument(
        "--settle", type=float, default=1.0, help="seconds to listen after each load event"
    )
    args = parser.parse_args(argv)
    pages = [*(args.only or DEFAULT_PAGES), *args.page]
    try:
        reports = asyncio.run(check_site(args.site, pages, args.screenshots, args.settle))
    except BrowserError as err:
        print(f"browser check: error: {err}", file=sys.stderr)
        return 1
    for report in reports:
        status = "ok" if report.ok else "BROKEN"
        print(f"{status:6} {report.url} ({report.title!r}, {report.images} images)")
        for problem in report.problems:
            print(f"       - {problem}")
    failed = [r for r in reports if not r.ok]
    print(f"browser check: {len(reports) - len(failed)}/{len(reports)} pages ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
