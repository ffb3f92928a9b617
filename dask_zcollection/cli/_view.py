"""``dzc view create|update|ls``: views over a read-only base collection.

Each command opens the view through the public API (``create_view``,
``open_view``), as the other commands open collections. ``--func
module:function`` names the update function (``fn(partition) -> variables``),
loaded as ``dzc insert --func`` loads a merge function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

__all__ = ["add_view_commands", "parse_variable"]


def parse_variable(text: str) -> dict[str, Any]:
    """``NAME:DTYPE:DIM[,DIM...][:FILL]`` as the mapping ``create_view`` takes.

    >>> parse_variable("ssh_anom:float32:time,x_ac:nan")["dimensions"]
    ['time', 'x_ac']
    """
    parts = text.split(":")
    if len(parts) not in (3, 4) or not all(parts[:3]):
        raise click.BadParameter(
            f"{text!r}: expected NAME:DTYPE:DIM[,DIM...][:FILL]", param_hint="--var"
        )
    spec: dict[str, Any] = {
        "name": parts[0],
        "dtype": parts[1],
        "dimensions": [d.strip() for d in parts[2].split(",") if d.strip()],
    }
    if len(parts) == 4 and parts[3]:
        fill: Any = parts[3]
        for cast in (int, float):
            try:
                fill = cast(fill)
                break
            except ValueError:
                continue
        spec["fill_value"] = fill
    return spec


def add_view_commands(
    group: click.Group,
    url_command: Callable[[Callable[..., Any]], Callable[..., Any]],
    json_option: Callable[[Callable[..., Any]], Callable[..., Any]],
    storage_options: Callable[[Sequence[str]], dict[str, Any] | None],
    load_function: Callable[[str], Callable[..., Any]],
    print_json: Callable[[Any], None],
) -> None:
    """Add the ``view`` group to ``group`` (the options shared with ``_app`` passed in)."""
    from ..view._api import create_view, open_view

    @group.group("view")
    def view() -> None:
        """Views: variables of their own over a read-only base collection."""

    @view.command("create")
    @url_command
    @click.option("--base", required=True, help="URL of the base collection (read-only).")
    @click.option(
        "--var",
        "variables",
        multiple=True,
        required=True,
        metavar="NAME:DTYPE:DIMS[:FILL]",
        help="A view variable (repeatable), e.g. ssh_anom:float32:time,x_ac:nan.",
    )
    @click.option(
        "--base-option",
        "base_options",
        multiple=True,
        metavar="KEY=VALUE",
        help="Storage option of the base (repeatable).",
    )
    @click.option("--overwrite", is_flag=True, help="Replace a view already at URL.")
    @json_option
    def create_command(
        url: str,
        options: tuple[str, ...],
        base: str,
        variables: tuple[str, ...],
        base_options: tuple[str, ...],
        overwrite: bool,
        as_json: bool,
    ) -> None:
        """Create a view at URL over the collection --base."""
        specs = [parse_variable(v) for v in variables]
        created = create_view(
            url,
            base=base,
            variables=specs,
            overwrite=overwrite,
            storage_options=storage_options(options),
            base_storage_options=storage_options(base_options),
        )
        if as_json:
            print_json({"url": created.url, "base": base, "variables": list(created.variables)})
        else:
            click.echo(f"created view {created.url} over {base}: {', '.join(created.variables)}")

    @view.command("update")
    @url_command
    @click.option(
        "--func",
        required=True,
        metavar="MODULE:FUNCTION",
        help="fn(partition) -> the view variables of that partition.",
    )
    @click.option("--filter", "-f", "filters", default=None, help="Base partitions to compute.")
    @click.option("--vars", "names", default=None, help="Comma-separated view variables.")
    @json_option
    def update_command(
        url: str,
        options: tuple[str, ...],
        func: str,
        filters: str | None,
        names: str | None,
        as_json: bool,
    ) -> None:
        """Compute view variables of the selected base partitions with --func (one commit)."""
        fn = load_function(func)
        wanted = [n.strip() for n in names.split(",") if n.strip()] if names else None
        opened = open_view(url, mode="rw", storage_options=storage_options(options))
        paths = opened.update(fn, filters=filters, variables=wanted)
        if as_json:
            print_json({"url": opened.url, "partitions": list(paths)})
        else:
            click.echo(f"computed {len(paths)} partition(s)" + "".join(f"\n  {p}" for p in paths))

    @view.command("ls")
    @url_command
    @click.option("--filter", "-f", "filters", default=None, help="Partition-key filter.")
    @json_option
    def ls_command(url: str, options: tuple[str, ...], filters: str | None, as_json: bool) -> None:
        """List the computed partitions of a view, and those whose base changed since."""
        opened = open_view(url, storage_options=storage_options(options))
        computed = opened.partitions(filters)
        stale = set(opened.stale_partitions())
        base = opened.base.partitions(filters)
        doc = {
            "url": opened.url,
            "base": opened.base.url,
            "variables": list(opened.variables),
            "partitions": [{"partition": p, "stale": p in stale} for p in computed],
            "not_computed": [p for p in base if p not in set(computed)],
        }
        if as_json:
            print_json(doc)
            return
        click.echo(f"view {doc['url']} over {doc['base']}: {', '.join(doc['variables'])}")
        for entry in doc["partitions"]:
            click.echo(f"  {entry['partition']}" + ("  (stale)" if entry["stale"] else ""))
        click.echo(
            f"{len(computed)} computed ({len(stale & set(computed))} stale), "
            f"{len(doc['not_computed'])} base partition(s) not computed"
        )
