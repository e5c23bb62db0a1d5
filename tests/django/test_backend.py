"""The app as a backend speaking to livechat with the Python client (clients/python) and the
server key: announcements posted to rooms, and a deactivated account's connections closed at once."""
import asyncio

from support import API_KEY, PASSWORD, Chat, fresh_room, refusal, sign_in


def test_an_announcement_reaches_each_room_under_the_announcers_name(app, servers):
    livechat = servers.livechat(**app.hooks())
    rooms = [fresh_room(), fresh_room()]
    reach = {"LIVECHAT_URL": f"http://{livechat.address}", "LIVECHAT_API_KEY": API_KEY}

    async def scenario():
        alice = await Chat.open(livechat, rooms[0], sign_in(app, "alice"))
        args = ["livechat_announce", "Maintenance at noon", "--room", rooms[0], "--room", rooms[1]]
        said = await asyncio.to_thread(app.manage, *args, **reach)
        assert said.splitlines() == [f"{rooms[0]}: message 1", f"{rooms[1]}: message 1"]
        frame = await alice.receive(lambda frame: frame.get("message") == "Maintenance at noon")
        assert frame["user"] == {"name": "announcements"}
        await alice.close()

    asyncio.run(scenario())
    for room in rooms:
        assert [item["message"] for item in livechat.history(room)] == ["Maintenance at noon"]


def test_deactivating_an_account_closes_its_connections_with_4004_at_once(app, servers):
    # Connect hook answers not reused, so that the refused reconnection below is asked about.
    livechat = servers.livechat(**app.hooks(), LIVECHAT_HOOK_CACHE="0")
    room = fresh_room()
    app.manage("shell", "--no-imports", "-c",
               f"from django.contrib.auth.models import User; User.objects.create_user('carol', password={PASSWORD!r})")
    cookie = sign_in(app, "carol")
    deactivate = ("from django.contrib.auth.models import User\n"
                  "carol = User.objects.get(username='carol')\n"
                  "carol.is_active = False\n"
                  "carol.save()\n")
    reach = {"LIVECHAT_URL": f"http://{livechat.address}", "LIVECHAT_API_KEY": API_KEY}

    async def scenario():
        carol = await Chat.open(livechat, room, cookie)
        await carol.publish("still here")
        # The connect hook's answer holds 300 s: without the app's call, carol would stay that long.
        await asyncio.to_thread(app.manage, "shell", "--no-imports", "-c", deactivate, **reach)
        assert await carol.closed() == 4004
        status, _ = await refusal(livechat, room, cookie)
        assert status == 401  # Django no longer signs in an inactive user

    asyncio.run(scenario())
