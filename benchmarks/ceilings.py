"""``ceilings``: what this machine does at best on the data (the limits of the other figures).

numcodecs compress / decompress throughput on one chunk (1 thread and all
cores), a numpy copy, and ``readv`` of every file of the written store from the
page cache.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable
from typing import Any

import numpy

from . import _data
from ._context import Context
from ._core import Config, Measurement, Result, Stat, timed

__all__ = ["measurements", "page_cache"]


def _chunk_bytes(ctx: Context, chunks: int | None = None) -> numpy.ndarray:
    rows = min(chunks or ctx.cfg.chunks, ctx.cfg.rows)
    return numpy.ascontiguousarray(ctx.columns["ssh"][:rows])


def _codec_throughput(ctx: Context, codec_name: str, threads: int) -> tuple[Stat, Stat, float]:
    """Compress / decompress MB/s (uncompressed bytes) with ``threads`` threads; ratio."""
    import numcodecs.blosc

    codec = _data.numcodecs_codec(codec_name)
    data = _chunk_bytes(ctx)
    n_chunks = max(4, int((16e6 if ctx.cfg.quick else 128e6) // max(data.nbytes, 1)))
    if codec is None:

        def enc(x: numpy.ndarray) -> Any:
            return x.tobytes()

        def dec(b: Any) -> Any:
            return numpy.frombuffer(b, dtype=data.dtype).copy()
    else:
        enc, dec = codec.encode, codec.decode
    encoded = enc(data)
    ratio = data.nbytes / len(encoded)
    old = getattr(numcodecs.blosc, "use_threads", None)
    numcodecs.blosc.use_threads = False  # one blosc thread per call: we control parallelism
    try:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:

            def run(fn: Callable[[Any], Any], arg: Any) -> None:
                list(pool.map(fn, [arg] * n_chunks))

            mb = data.nbytes * n_chunks / 1e6
            c = timed(lambda: run(enc, data), ctx.cfg.repeats).inverse(mb)
            d = timed(lambda: run(dec, encoded), ctx.cfg.repeats).inverse(mb)
    finally:
        numcodecs.blosc.use_threads = old
    return c, d, ratio


def m_codec_ceiling(codec_name: str) -> Callable[[Context], list[Result]]:
    def fn(ctx: Context) -> list[Result]:
        one = _codec_throughput(ctx, codec_name, 1)
        two = _codec_throughput(ctx, codec_name, os.cpu_count() or 1)
        ctx.cache[f"ceiling.{codec_name}"] = {
            "compress": two[0],
            "decompress": two[1],
            "ratio": one[2],
        }
        label = f"{ctx.cfg.chunks}-row chunks, ratio {one[2]:.2f}"
        out = []
        for i, what in enumerate(("compress", "decompress")):
            out.append(
                Result(
                    f"ceiling.{what}[{codec_name}]",
                    "ceilings",
                    "MB/s",
                    values={"value": one[i], "threads": two[i]},
                    note=f"1 thread (first column) / {os.cpu_count()} threads: "
                    f"{two[i].median:,.0f}; {label}",
                    lower_is_better=False,
                )
            )
        return out

    return fn


def m_memcpy(ctx: Context) -> Result:
    src = ctx.columns["ssh"][: max(1, min(ctx.cfg.rows, int(256e6 // (4 * ctx.cfg.width))))]
    dst = numpy.empty_like(src)
    mb = src.nbytes / 1e6
    stat = timed(lambda: numpy.copyto(dst, src), max(3, ctx.cfg.repeats)).inverse(mb)
    fresh = timed(lambda: src.copy(), max(3, ctx.cfg.repeats)).inverse(mb)
    ctx.cache["ceiling.memcpy"] = stat
    return Result(
        "ceiling.memcpy",
        "ceilings",
        "MB/s",
        {"value": stat},
        note=f"into an existing buffer; into fresh memory {fresh.median:,.0f} MB/s",
        lower_is_better=False,
    )


def m_page_cache(ctx: Context) -> Result:
    ctx.ensure_written()
    root = ctx.path("main", "dzc")
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    total = sum(os.path.getsize(f) for f in files)
    buf = bytearray(max(os.path.getsize(f) for f in files))
    view = memoryview(buf)

    def read_all() -> None:
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                n = os.path.getsize(f)
                got = 0
                while got < n:
                    k = os.readv(fd, [view[got:n]])
                    if k == 0:
                        break
                    got += k
            finally:
                os.close(fd)

    read_all()  # warm
    stat = timed(read_all, max(3, ctx.cfg.repeats)).inverse(total / 1e6)
    ctx.cache["ceiling.page_cache"] = stat
    return Result(
        "ceiling.page_cache_read",
        "ceilings",
        "MB/s",
        {"value": stat},
        note=f"{len(files)} files, {total / 1e6:,.0f} MB stored (compressed) of the dzc store",
        lower_is_better=False,
    )


def measurements(cfg: Config) -> list[Measurement]:
    """The codec ceilings (the main codec and the matrix's) and the memory copy."""
    out = [
        Measurement(
            f"ceiling[{c}]",
            "ceilings",
            m_codec_ceiling(c),
            description="numcodecs on one chunk",
            rows=(f"ceiling.compress[{c}]", f"ceiling.decompress[{c}]"),
        )
        for c in dict.fromkeys([cfg.codec, *cfg.codec_matrix])
    ]
    out.append(Measurement("ceiling.memcpy", "ceilings", m_memcpy))
    return out


def page_cache(cfg: Config) -> list[Measurement]:
    """The page-cache read ceiling (run after ``io``, which writes the store it reads)."""
    return [Measurement("ceiling.page_cache_read", "ceilings", m_page_cache)]
