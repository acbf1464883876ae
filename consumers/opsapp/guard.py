"""Who may use the ops app, and CSRF safety of its actions.

With `OPS_TOKEN` set, a request carries it as `Authorization: Bearer` (scripts) or holds the
session cookie the login form sets (browsers): an HMAC of the token, HttpOnly, SameSite=Strict.
Without it, the app serves 127.0.0.1 only (`switchboard ops` refuses another address) and
everyone there is allowed. A page's action (a POST form) carries a form token bound to the
session and is refused from another origin; the JSON API's actions need the bearer header, or
without a token a custom header, which no cross-site form or simple request can send."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from starlette.requests import Request

from ingress.settings import Secret

COOKIE = "sb_ops"
LOCAL_HEADER = "x-switchboard-ops"  # the JSON API's actions when no OPS_TOKEN is set


class Guard:
    def __init__(self, token: Secret | None, form_key: bytes) -> None:
        self.token = token
        self.form_key = form_key  # random per process: forms of a previous run are refused

    @property
    def open(self) -> bool:
        return self.token is None

    def session_for(self, offered: str) -> str | None:
        """The cookie value for a token typed into the login form, None when it is wrong."""
        if self.token is None or not self.token.matches(offered):
            return None
        return self._session()

    def _session(self) -> str:
        assert self.token is not None
        return hmac.new(self.token.reveal().encode(), b"ops-session", hashlib.sha256).hexdigest()

    def bearer(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return self.token is not None and scheme.lower() == "bearer" and self.token.matches(value)

    def cookie(self, request: Request) -> bool:
        offered = request.cookies.get(COOKIE, "")
        return self.token is not None and hmac.compare_digest(
            offered.encode(), self._session().encode()
        )

    def allowed(self, request: Request) -> bool:
        return self.open or self.bearer(request) or self.cookie(request)

    def api_action_allowed(self, request: Request) -> bool:
        """A POST of the JSON API: the bearer header (or, open, the custom header)."""
        if self.open:
            return request.headers.get(LOCAL_HEADER) == "1"
        return self.bearer(request)

    def form_token(self, request: Request) -> str:
        seed = request.cookies.get(COOKIE, "") if not self.open else "open"
        return hmac.new(self.form_key, f"form:{seed}".encode(), hashlib.sha256).hexdigest()

    def form_allowed(self, request: Request, offered: str) -> bool:
        """A page's POST: same origin (when the browser says) and the form token. The host is
        compared, not the scheme: behind a TLS proxy the browser's origin is https while the
        app is spoken to in http; another site differs in its host."""
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            return False
        return hmac.compare_digest(offered.encode(), self.form_token(request).encode())
