"""HTML for the ops page: one layout (`string.Template`), tables and forms built from values
that are escaped here, always. Content comes from customers: nothing reaches the page raw
but the fragments this module builds (`Safe`)."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from string import Template
from urllib.parse import urlencode

from starlette.responses import HTMLResponse

# No script at all, and nothing loaded from elsewhere: an injection that slipped through would
# still not run (defence in depth; the escaping is the defence).
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

LAYOUT = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title · Switchboard ops</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6em 1.2em}
header a{color:#cfe0ff;margin-right:1.2em;text-decoration:none}
main{padding:1em 1.2em}
table{border-collapse:collapse;background:#fff;margin:.5em 0 1.5em}
th,td{border:1px solid #d8dce3;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#eef1f5}
.bad{color:#b00020;font-weight:600}.ok{color:#0a7a33}
form.filters input,form.filters select{margin-right:.6em}
.note{color:#555}
</style></head>
<body><header><strong>Switchboard ops</strong> &nbsp;
<a href="/">Health</a><a href="/conversations">Conversations</a><a href="/webhooks">Webhooks</a>
<a href="/dead">Dead letters</a></header>
<main><h1>$title</h1>
$body
</main></body></html>
""")


class Safe(str):
    """HTML built by this module: inserted as it is."""


def esc(value: object) -> Safe:
    if isinstance(value, Safe):
        return value
    if value is None:
        return Safe("")
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Safe(html.escape(str(value), quote=True))


def join(parts: Iterable[object]) -> Safe:
    return Safe("".join(esc(p) for p in parts))


def tag(name: str, content: object = "", /, **attrs: object) -> Safe:
    shown = "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items()
                    if v is not None and v is not False)  # fmt: skip
    return Safe(f"<{name}{shown}>{esc(content)}</{name}>")


def link(href: str, text: object, **query: object) -> Safe:
    given = {k: v for k, v in query.items() if v is not None}
    return tag("a", text, href=href + (f"?{urlencode(given)}" if given else ""))


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, id_: str = "") -> Safe:
    # A table of facts (no column names) has no header row.
    head = tag("thead", tag("tr", join(tag("th", h) for h in headers))) if any(headers) else ""
    body = join(tag("tr", join(tag("td", c) for c in row)) for row in rows)
    return tag("table", join([head, tag("tbody", body)]), id=id_ or None)


def field(name: str, value: object, *, label: str, options: Sequence[str] = ()) -> Safe:
    if options:
        choices = [tag("option", "any", value="")] + [
            tag("option", o, value=o, selected="selected" if o == value else None) for o in options
        ]
        control = tag("select", join(choices), name=name, id=name)
    else:
        control = Safe(f'<input name="{esc(name)}" id="{esc(name)}" value="{esc(value)}">')
    return join([tag("label", label, for_=name), Safe(" "), control, Safe(" ")])


def hidden(name: str, value: str) -> Safe:
    return Safe(f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">')


def page(title: str, body: Safe, *, status: int = 200) -> HTMLResponse:
    text = LAYOUT.substitute(title=esc(title), body=body)
    return HTMLResponse(
        text,
        status_code=status,
        headers={"content-security-policy": CSP, "x-content-type-options": "nosniff",
                 "referrer-policy": "same-origin", "cache-control": "no-store"},
    )  # fmt: skip
