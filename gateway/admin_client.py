"""A small client of the admin plane's HTTP/JSON API, for the CLI and the demo.

Standard library only (``urllib``): the admin commands must work from any risk officer's shell
with nothing but the project installed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def admin_call(base: str, token: str, method: str, path: str,
               body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            detail = json.loads(err.read()).get("error", "")
        except ValueError:
            detail = ""
        raise AdminCallError(f"{err.code} {err.reason}: {detail}", err.code, detail) from None
    except urllib.error.URLError as err:
        raise AdminCallError(f"cannot reach the admin plane at {base}: {err.reason}") from None


class AdminCallError(Exception):
    """The call failed: ``status`` is the HTTP status (0 when the plane was not reached) and
    ``detail`` the answer's ``error`` text."""

    def __init__(self, text: str, status: int = 0, detail: str = "") -> None:
        super().__init__(text)
        self.status = status
        self.detail = detail
