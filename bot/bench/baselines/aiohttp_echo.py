"""Baseline (a): a minimal aiohttp + wechatpy echo bot, as a developer would write it first.

``python -m bot.bench.baselines.aiohttp_echo --port 8090`` (account from the environment, see the
package docstring). Verify the query signature, decrypt, parse, reply with the same text, encrypt:
wechatpy's documented calls, nothing else (no Redis, no dedupe, no per-user state, no router).
"""

from __future__ import annotations

import argparse

from aiohttp import web
from wechatpy import create_reply, parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.utils import check_signature

from bot.bench.baselines import account


def make_app() -> web.Application:
    token, aes_key, app_id = account()
    crypto = WeChatCrypto(token, aes_key, app_id)

    async def wechat(request: web.Request) -> web.Response:
        q = request.query
        try:
            check_signature(token, q.get("signature", ""), q.get("timestamp", ""), q.get("nonce", ""))
        except InvalidSignatureException:
            return web.Response(status=403)
        if request.method == "GET":
            return web.Response(text=q.get("echostr", ""))
        body = await request.read()
        try:
            xml = crypto.decrypt_message(body, q.get("msg_signature", ""), q["timestamp"], q["nonce"])
        except Exception:
            return web.Response(status=400)
        message = parse_message(xml)
        content = getattr(message, "content", None)
        if not content:
            return web.Response(text="success")
        reply = create_reply(content, message)
        return web.Response(text=crypto.encrypt_message(reply.render(), q["nonce"]), content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/wechat", wechat)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    args = p.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
