"""What the server sends a browser page: the raw websocket frames, to check what an interaction re-sends."""

from __future__ import annotations


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
