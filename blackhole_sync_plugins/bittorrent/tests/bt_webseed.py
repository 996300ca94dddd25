"""A Range-capable HTTP server for a directory (a BEP 19 web seed in tests).

    python bt_webseed.py DIR

Serves ``GET /<name>`` for the regular files in DIR (aiohttp's FileResponse answers Range
requests with 206), on 127.0.0.1 and an ephemeral port; prints ``{"event": "ready", "port": N}``
and runs until killed or until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

from aiohttp import web


async def main(root: Path) -> None:
    async def blob(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = root / name
        if not re.fullmatch(r"[0-9a-f]{64}", name) or not path.is_file():
            raise web.HTTPNotFound()
        print(f"GET {name} Range={request.headers.get('Range')}", file=sys.stderr, flush=True)
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/{name}", blob)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(json.dumps({"event": "ready", "port": port}), flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
