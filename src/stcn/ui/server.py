"""The HTTP side of ``stcn ui``: a Starlette app over :class:`stcn.ui.state.UIState`.

Routes (JSON unless said otherwise; errors are ``{"error": "<one line>"}`` with 400 for a user's
mistake, 409 while busy, 413 for an oversized body):

    GET  /                      the page
    GET  /static/<file>         app.js, app.css (a fixed list: nothing else on disk is reachable)
    GET  /api/info              video size, frame names, objects, undo/redo, job, open strokes, the
                                networks loaded and the tools they allow
    GET  /api/frames/<t>.jpg    frame t (JPEG)
    GET  /api/labels/<t>        frame t's label map: H*W raw bytes (uint8, row-major)
    POST /api/scribble          {"frame", "strokes": [[[x, y], ...], ...], "object_id"}
    POST /api/click             {"frame", "point": [x, y], "object_id", "positive"}
    POST /api/brush             {"frame", "strokes", "object_id", "size"}   (object 0 = eraser)
    POST /api/commit | /api/undo | /api/redo
    POST /api/masks/<t>         body: a label PNG (ids 0..K) -> the frame's mask
    POST /api/objects           add an object (before the first interaction)
    POST /api/objects/<id>      {"name"?, "colour"?}
    POST /api/propagate         {"frame"?} -> 202; progress on /api/events
    POST /api/cancel
    GET  /api/events            server-sent events: progress, done, cancelled, error
    POST /api/save              {"overlay": bool} -> what was written

Safety: requests whose Host is not this machine's loopback name (unless the server was bound to
another host on purpose) or whose Origin differs from the Host are refused (DNS rebinding, other
sites' pages); POSTs must carry JSON or PNG content types (a cross-site form cannot); bodies are
bounded. Strokes are rasterised server-side by the session (the GUI rules), so a page and a script
sending the same point lists get the same masks.
"""
from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
from importlib import resources
from urllib.parse import urlsplit

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from stcn.errors import UserError
from stcn.ui.state import Busy, UIState

MAX_JSON_BYTES = 4 * 1024 * 1024  # strokes: ~100k points
MAX_UPLOAD_BYTES = 32 * 1024 * 1024  # one mask PNG
STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
OPTIONAL_FIELDS = {"positive"}
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class TooLarge(Exception):
    pass


def _static(name: str) -> bytes:
    return resources.files("stcn.ui").joinpath("static", name).read_bytes()


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _json(request: Request) -> dict:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise UserError("requests must be sent as application/json")
    raw = await _body(request, MAX_JSON_BYTES)
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        raise UserError("the request body is not valid JSON") from None
    except RecursionError:  # arrays nested thousands deep: a hostile body, not a server fault
        raise UserError("the request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise UserError("the request body must be a JSON object")
    return data


def _int(request: Request, key: str) -> int:
    try:
        return int(request.path_params[key])
    except ValueError:
        raise UserError(f"{key} must be an integer") from None


def create_app(state: UIState, *, allowed_hosts: set[str] | None = None) -> Starlette:
    """The app for ``state`` (missing networks are the state's business: stcn ui starts without any
    downloaded weights, see :func:`stcn.ui.launch.build_state`).

    allowed_hosts: Host names accepted (default: the loopback names); ``{"*"}`` accepts any.
    """
    hosts = LOOPBACK if allowed_hosts is None else set(allowed_hosts)

    async def index(request: Request) -> Response:
        return HTMLResponse(_static("index.html").decode())

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:  # a fixed list: no path ever reaches the file system
            return JSONResponse({"error": "not found"}, status_code=404)
        return Response(_static(name), media_type=STATIC[name])

    async def info(request: Request) -> Response:
        return JSONResponse(state.info())

    async def frame(request: Request) -> Response:
        return Response(await run_in_threadpool(state.frame_jpeg, _int(request, "t")), media_type="image/jpeg")

    async def labels(request: Request) -> Response:
        return Response(state.labels(_int(request, "t")), media_type="application/octet-stream")

    def interaction(op: str, fields: tuple[str, ...]):
        async def handler(request: Request) -> Response:
            data = await _json(request)
            unknown = set(data) - set(fields)
            if unknown:
                raise UserError(f"unexpected field(s) for {op}: {', '.join(sorted(unknown))}")
            missing = [k for k in fields if k not in data and k not in OPTIONAL_FIELDS]
            if missing:
                raise UserError(f"missing field(s) for {op}: {', '.join(missing)}")
            kwargs = {k: data[k] for k in fields if k in data}
            if "positive" in kwargs and not isinstance(kwargs["positive"], bool):  # "no" is truthy
                raise UserError("positive must be true or false")
            if op == "click" and "point" in kwargs:
                kwargs["point"] = tuple(kwargs["point"]) if isinstance(kwargs["point"], list) else kwargs["point"]
            await run_in_threadpool(state.apply, op, **kwargs)
            return JSONResponse(state.info())
        return handler

    async def import_mask(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "image/png":
            raise UserError("send the mask as image/png")
        t = _int(request, "t")
        raw = await _body(request, MAX_UPLOAD_BYTES)
        label_map = await run_in_threadpool(_decode_label_png, raw)
        await run_in_threadpool(state.apply, "set_mask", frame=t, label_map=label_map)
        return JSONResponse(state.info())

    async def add_object(request: Request) -> Response:
        await _json(request)
        await run_in_threadpool(state.add_object)
        return JSONResponse(state.info())

    async def edit_object(request: Request) -> Response:
        data = await _json(request)
        state.edit_object(_int(request, "id"), name=data.get("name"), colour=data.get("colour"))
        return JSONResponse(state.info())

    async def propagate(request: Request) -> Response:
        data = await _json(request)
        state.start_propagation(data.get("frame"))
        return JSONResponse(state.info(), status_code=202)

    async def cancel(request: Request) -> Response:
        await _json(request)
        return JSONResponse({"cancelled": state.cancel()})

    async def save(request: Request) -> Response:
        data = await _json(request)
        overlay = data.get("overlay", False)
        if not isinstance(overlay, bool):
            raise UserError("overlay must be true or false")
        return JSONResponse(await run_in_threadpool(state.save, overlay=overlay))

    async def events(request: Request) -> Response:
        queue = state.events.subscribe()

        async def stream():
            try:
                yield f"event: hello\ndata: {json.dumps(state.job)}\n\n"
                while True:
                    try:
                        event, data = await asyncio.wait_for(queue.get(), timeout=15)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"event: {event}\ndata: {json.dumps(data)}\n\n"
            finally:
                state.events.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream")

    routes = [
        Route("/", index),
        Route("/static/{name}", static),
        Route("/api/info", info),
        Route("/api/frames/{t}.jpg", frame),
        Route("/api/labels/{t}", labels),
        Route("/api/scribble", interaction("scribble", ("frame", "strokes", "object_id")), methods=["POST"]),
        Route("/api/click", interaction("click", ("frame", "point", "object_id", "positive")), methods=["POST"]),
        Route("/api/brush", interaction("brush", ("frame", "strokes", "object_id", "size")), methods=["POST"]),
        Route("/api/commit", interaction("commit", ()), methods=["POST"]),
        Route("/api/undo", interaction("undo", ()), methods=["POST"]),
        Route("/api/redo", interaction("redo", ()), methods=["POST"]),
        Route("/api/masks/{t}", import_mask, methods=["POST"]),
        Route("/api/objects", add_object, methods=["POST"]),
        Route("/api/objects/{id}", edit_object, methods=["POST"]),
        Route("/api/propagate", propagate, methods=["POST"]),
        Route("/api/cancel", cancel, methods=["POST"]),
        Route("/api/events", events),
        Route("/api/save", save, methods=["POST"]),
    ]

    def error(status: int):
        async def handler(request: Request, exc: Exception) -> Response:
            return JSONResponse({"error": str(exc) or "request too large"}, status_code=status)
        return handler

    handlers = {TooLarge: error(413), Busy: error(409), UserError: error(400)}
    return _Guard(Starlette(routes=routes, exception_handlers=handlers), hosts)


class _Guard:
    """ASGI middleware: refuse foreign Host / Origin headers, add the security headers."""

    def __init__(self, app, hosts: set[str]) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        hostname = urlsplit(f"//{host}").hostname or ""
        problem = None
        if "*" not in self.hosts and hostname not in self.hosts and f"[{hostname}]" not in self.hosts:
            problem = (403, f"host {host!r} not allowed (start with --host to serve other names)")
        elif "origin" in headers and urlsplit(headers["origin"]).netloc != host:
            problem = (403, "cross-origin requests are not allowed")
        if problem is not None:
            return await JSONResponse({"error": problem[1]}, status_code=problem[0])(scope, receive, send)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                         if k.lower().encode() not in present]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _decode_label_png(raw: bytes) -> np.ndarray:
    """PNG bytes -> (H, W) label map (palette or greyscale pixel values)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    from stcn.guards import image_pixel_limit

    try:
        with warnings.catch_warnings():  # PIL's bomb warning: refused below instead
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
        if image.format != "PNG":
            raise UserError("the uploaded file is not a PNG")
        w, h = image.size
        if w * h > image_pixel_limit():  # checked before decoding: a 20000x20000 PNG is a few hundred bytes
            raise UserError(f"the uploaded mask is {w}x{h}, too large for an image (a decompression bomb?)")
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError("the uploaded mask is too large for an image (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UserError("the uploaded file is not a readable PNG") from None
    if image.mode not in ("P", "L", "1"):
        raise UserError(f"a mask must be a palette or greyscale PNG of object ids (got mode {image.mode})")
    return np.array(image.convert("L") if image.mode == "1" else image, dtype=np.uint8)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one. A taken port is a UserError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror} (choose another --port)") from None
    sock.listen(64)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


class BackgroundServer:
    """Serve ``app`` from a thread (tests, notebooks): ``with BackgroundServer(app) as url: ...``."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.sock = bind(host, port)
        self.url = url_of(self.sock)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.server.install_signal_handlers = lambda: None  # not the main thread
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="stcn-ui-server")

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the UI server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.server.force_exit = True  # open event streams would otherwise keep it waiting
        self.thread.join(timeout=10)
        self.sock.close()
