"""What the server sends a browser page: the raw websocket frames, to check what an interaction re-sends."""

from __future__ import annotations

from urllib.parse import urlparse

from tests.support.browser import wait_until_idle


def record_frames(page) -> list[bytes]:
    """A list that fills with every websocket frame the page receives from now on (clear it between steps)."""
    frames: list[bytes] = []
    page.on(
        "websocket",
        lambda socket: socket.on(
            "framereceived",
            lambda frame: frames.append(frame if isinstance(frame, bytes) else frame.encode()),
        ),
    )
    return frames


def sent_for_a_layer_step(page, frames: list[bytes], new_title: str, timeout_ms: int) -> bytes:
    """Steps the page's Layer slider one to the left; all the server sent until the new title showed and it went idle."""
    frames.clear()
    layer = page.locator('input[type="range"][aria-label="Layer"]')
    layer.focus()
    layer.press("ArrowLeft")
    page.get_by_text(new_title).first.wait_for(timeout=timeout_ms)
    wait_until_idle(page)
    return b"".join(frames)


def media_fetched(page) -> list[str]:
    """A list that fills with each media file (a photo) the page fetches from the server, not from its cache.

    Read through Chromium's DevTools protocol: a request answered from the browser's memory or disk
    cache is not counted.
    """
    cdp = page.context.new_cdp_session(page)
    from_cache: set[str] = set()
    fetched: list[str] = []

    def response(event: dict) -> None:
        url = event["response"]["url"]
        cached = event["response"].get("fromDiskCache") or event["requestId"] in from_cache
        if urlparse(url).path.startswith("/media/") and not cached:
            fetched.append(url)

    cdp.on("Network.requestServedFromCache", lambda event: from_cache.add(event["requestId"]))
    cdp.on("Network.responseReceived", response)
    cdp.send("Network.enable")
    return fetched
