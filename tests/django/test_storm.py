"""A reconnect storm does not take the app down: livechat asks the connect hook once for many
handshakes with the same cookie (identical calls in flight are made once, answers are kept 5 s)."""
import asyncio
import time

from websockets.asyncio.client import connect

from support import Chat, fresh_room, sign_in

HANDSHAKES = 2000
CLIENTS = 25


def test_a_storm_of_2000_handshakes_with_one_cookie_makes_a_handful_of_hook_calls(app, servers, capsys):
    livechat = servers.livechat(**app.hooks())
    room = fresh_room()
    cookie = sign_in(app, "alice")  # a session livechat has not seen: its first handshake calls the hook
    before = app.connect_calls()

    async def client(handshakes: int) -> int:
        for _ in range(handshakes):
            async with connect(
                livechat.ws_url(room),
                additional_headers={"Cookie": cookie},
                compression=None,
                proxy=None,
            ):
                pass
        return handshakes

    async def storm() -> int:
        return sum(await asyncio.gather(*(client(HANDSHAKES // CLIENTS) for _ in range(CLIENTS))))

    started = time.monotonic()
    assert asyncio.run(storm()) == HANDSHAKES
    elapsed = time.monotonic() - started
    calls = app.connect_calls() - before
    with capsys.disabled():
        print(f"\n{HANDSHAKES} handshakes with one cookie from {CLIENTS} clients in {elapsed:.1f} s:"
              f" {calls} connect hook call(s)")
    assert 1 <= calls <= 5

    async def still_signed_in():  # the storm left the session and the app as they were
        alice = await Chat.open(livechat, room, cookie)
        assert (await alice.publish("after the storm"))["user"]["name"] == "alice"
        await alice.close()

    asyncio.run(still_signed_in())
