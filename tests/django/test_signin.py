"""The connect hook: livechat signs a browser in from its Django session cookie."""
import asyncio

from support import (
    Chat,
    alice_and_bob,
    anonymous_cookie,
    close_all,
    fresh_room,
    refusal,
    sign_in,
    sign_out,
    signed_out_cookie,
    until,
)


def test_a_session_from_the_login_form_speaks_under_its_django_username(app, servers):
    livechat = servers.livechat(**app.hooks())
    room = fresh_room()

    async def scenario():
        chats = await alice_and_bob(app, room, livechat)
        echo = await chats["alice"].publish("hello from alice")
        assert echo["user"] == {"id": str(app.users["alice"]), "name": "alice"}
        seen = await chats["bob"].receive(lambda frame: frame.get("id") == echo["id"])
        assert (seen["message"], seen["user"]) == ("hello from alice", echo["user"])
        await close_all(chats)

    asyncio.run(scenario())
    assert livechat.history(room)[-1]["user"]["name"] == "alice"


def test_an_anonymous_or_signed_out_cookie_is_refused_401_at_the_handshake(app, servers):
    livechat = servers.livechat(**app.hooks())
    reason = "not signed in: sign in at /accounts/login/ first"
    for cookie in (anonymous_cookie(app), signed_out_cookie(app, "alice"), None):
        assert asyncio.run(refusal(livechat, fresh_room(), cookie)) == (401, {"error": reason}), cookie


def test_a_room_the_user_may_not_enter_is_refused_403_and_its_group_gets_in(app, servers):
    livechat = servers.livechat(**app.hooks())
    staff_room = fresh_room("staff")

    async def scenario():
        status, body = await refusal(livechat, staff_room, sign_in(app, "alice"))
        assert (status, body) == (403, {"error": f"alice may not enter the room {staff_room}"})
        bob = await Chat.open(livechat, staff_room, sign_in(app, "bob"))  # bob is in the group staff
        assert (await bob.publish("staff only"))["user"]["name"] == "bob"
        await bob.close()

    asyncio.run(scenario())


def test_signing_out_of_django_closes_the_livechat_connection_at_its_next_check(app, servers):
    # The app's answers hold 2 s here and are not reused: livechat asks again every 1.6 s.
    brief = servers.django("django-brief-answers", app.db, LIVECHAT_CONNECT_EXPIRES_IN="2")
    livechat = servers.livechat(**brief.hooks(), LIVECHAT_HOOK_CACHE="0")
    room = fresh_room()
    cookie = sign_in(app, "alice")
    before = app.connect_calls()

    async def scenario():
        alice = await Chat.open(livechat, room, cookie)
        await until(lambda: app.connect_calls() >= before + 2, "livechat to ask the app again")
        await alice.publish("still signed in")
        await asyncio.to_thread(sign_out, app, cookie)
        assert await alice.closed() == 4001

    asyncio.run(scenario())
