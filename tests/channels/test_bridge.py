"""livechat in the app's Django Channels layer (docs/channels.md), against the real stack: Django,
channels, channels_redis and daphne from PyPI (the reference app of bench/peers/django), real
redis-servers, the livechat binary."""
import asyncio
import re

from channels_redis.core import RedisChannelLayer

from bridge_support import Client, django_shell_group_send, in_group, layer_env, readyz
from support import fresh_room, until, wait_for


def bridge_in(redis, room: str) -> bool:
    return f"livechat!chat_{room}" in in_group(redis, f"chat_{room}")


def app_in(redis, room: str) -> bool:
    return any(not channel.startswith("livechat!") for channel in in_group(redis, f"chat_{room}"))


def test_group_send_from_a_django_shell_reaches_every_livechat_client_once_on_two_nodes(servers):
    redis = servers.redis()
    quiet = fresh_room("quiet").replace("-", "_")
    room = fresh_room("busy").replace("-", "_")
    bridged = {
        "REDIS_URL": redis.url(),
        "LIVECHAT_CHANNELS_LAYER": redis.url(),
        "LIVECHAT_CHANNELS_ROOMS": quiet,
    }
    first = servers.livechat("first", **bridged)
    second = servers.livechat("second", **bridged)

    async def scenario():
        here = await Client.open(first.ws_url(room, "meta=1"), "on the first node")
        there = await Client.open(second.ws_url(room, "meta=1"), "on the second node")
        await until(lambda: bridge_in(redis, room) and bridge_in(redis, quiet), "the bridge in both groups")
        await asyncio.to_thread(
            django_shell_group_send, layer_env([redis.url()]), f"chat_{room}", [{"n": 1}, "two", 3]
        )
        await asyncio.to_thread(django_shell_group_send, layer_env([redis.url()]), f"chat_{quiet}", ["unseen"])
        # Then one more through livechat itself: once it is in, nothing else is on its way.
        await here.send("last")
        for client in (here, there):
            frames = await client.until(lambda frames: any(f["message"] == "last" for f in frames), "the last")
            assert [frame["message"] for frame in frames] == [{"n": 1}, "two", 3, "last"], client.name
            assert [frame["id"] for frame in frames] == [1, 2, 3, 4], client.name
        await here.close()
        await there.close()

    asyncio.run(scenario())
    assert [item["message"] for item in first.history(room)] == [{"n": 1}, "two", 3, "last"]
    # The room nobody had opened: stored once, with its id, for whoever comes.
    assert [(item["id"], item["message"]) for item in second.history(quiet)] == [(1, "unseen")]
    published = first.metric("livechat_channels_received_total", outcome="published") + second.metric(
        "livechat_channels_received_total", outcome="published"
    )
    assert published == 4


def test_a_daphne_client_and_a_livechat_client_see_each_others_messages_once(servers):
    redis = servers.redis()
    livechat = servers.livechat(LIVECHAT_CHANNELS_LAYER=redis.url())
    daphne = servers.daphne(layer_env([redis.url()]))
    room = fresh_room("mixed").replace("-", "_")
    exchange(redis, livechat, daphne, room)


def test_an_encrypted_layer_on_two_hosts(servers):
    hosts = [servers.redis(), servers.redis()]
    urls = [host.url() for host in hosts]
    # The app encrypts with its new key and still reads the old one; livechat the other way round.
    daphne = servers.daphne(layer_env(urls, keys=["the new key", "the old key"]))
    livechat = servers.livechat(
        LIVECHAT_CHANNELS_LAYER=",".join(urls), LIVECHAT_CHANNELS_KEYS="the old key,the new key"
    )
    # chat_a's group is on the first host, chat_lobby's and the bridge's channels on the second
    # (channels_redis' hashing).
    for room, host in (("a", 0), ("lobby", 1)):
        exchange(hosts[host], livechat, daphne, room)
        assert bridge_in(hosts[host], room) and not bridge_in(hosts[1 - host], room)
    assert livechat.metric("livechat_channels_received_total", outcome="malformed") == 0


def exchange(redis, livechat, daphne, room: str, count: int = 10) -> None:
    """A client on daphne and one on livechat in `room` each send `count` messages, interleaved:
    each sees all of them, the other's and its own, exactly once; livechat's history has them all once."""

    async def scenario():
        on_daphne = await Client.open(daphne.ws_url(room), "on daphne")
        on_livechat = await Client.open(livechat.ws_url(room, ""), "on livechat")
        await until(lambda: bridge_in(redis, room) and app_in(redis, room), "livechat and the app in the group")
        sent = []
        for n in range(count):
            for client, origin in ((on_daphne, "from daphne"), (on_livechat, "from livechat")):
                sent.append(f"{origin} {n}")
                await client.send(sent[-1])
        for client in (on_daphne, on_livechat):
            await client.until(lambda frames: len(frames) >= len(sent), f"{len(sent)} frames")
        # A last one each way: what came before it is all there will be.
        await on_livechat.send("end")
        for client in (on_daphne, on_livechat):
            frames = await client.until(lambda frames: frames and frames[-1] == {"message": "end"}, "the end")
            assert sorted(frame["message"] for frame in frames[:-1]) == sorted(sent), client.name
            for origin in ("from daphne", "from livechat"):
                # Each one's messages in the order they were sent.
                mine = [m for m in client.messages() if m.startswith(origin)]
                assert mine == [f"{origin} {n}" for n in range(count)], client.name
        await on_daphne.close()
        await on_livechat.close()

    asyncio.run(scenario())
    stored = [item["message"] for item in livechat.history(room)]
    assert sorted(stored[:-1]) == sorted(f"{origin} {n}" for n in range(count) for origin in ("from daphne", "from livechat"))
    assert stored[-1] == "end"


def test_the_layer_redis_killed_and_restarted(servers):
    layer = servers.durable_redis("layer")
    livechat = servers.livechat(LIVECHAT_CHANNELS_LAYER=layer.url(), LIVECHAT_REDIS_TIMEOUT="1s")
    room = fresh_room("outage").replace("-", "_")
    group = f"chat_{room}"

    async def scenario():
        reader = "outage.reader"  # a consumer of the app, in the group, read below
        await RedisChannelLayer(hosts=[layer.url()]).group_add(group, reader)
        client = await Client.open(livechat.ws_url(room, "meta=1"), "on livechat")
        await until(lambda: bridge_in(layer, room), "the bridge in the group")

        layer.kill9()
        sent = [f"while the layer is down {n}" for n in range(8)]
        for message in sent:
            await client.send(message)
        frames = await client.until(lambda frames: len(frames) >= len(sent), "every message accepted")
        assert [frame["message"] for frame in frames] == sent
        down = await until(lambda: readyz(livechat).get("channels_layer", {}).get("status") == "down" and readyz(livechat), "readyz to say the layer is down")
        assert down["status"] == "ready", down
        assert livechat.metric("livechat_channels_layer_up") == 0

        layer.start()
        app = RedisChannelLayer(hosts=[layer.url()])  # the app's connections, opened again
        await until(lambda: readyz(livechat).get("channels_layer") == {"status": "up"}, "readyz to say the layer is back")
        received = [await asyncio.wait_for(app.receive(reader), 30) for _ in sent]
        assert [event["message"] for event in received] == sent
        assert {event["type"] for event in received} == {"chat.message"}
        # Back the other way too.
        await app.group_send(group, {"type": "chat.message", "message": "after the outage"})
        frames = await client.until(lambda frames: frames[-1]["message"] == "after the outage", "the app's message")
        assert frames[-1]["id"] == len(sent) + 1
        await client.close()
        await app.flush()

    asyncio.run(scenario())
    assert [item["message"] for item in livechat.history(room)][:8] == [f"while the layer is down {n}" for n in range(8)]
    assert livechat.metric("livechat_channels_sent_total", outcome="sent") == 8
    assert livechat.metric("livechat_channels_sent_total", outcome="dropped") == 0
    assert livechat.metric("livechat_channels_layer_up") == 1
    log = livechat.log.read_text()
    assert log.count("the Channels layer's Redis does not answer") == 1
    assert log.count("the Channels layer's Redis answers again") == 1


def test_a_consumer_that_stopped_reading_holds_its_capacity_and_no_more(servers):
    redis = servers.redis()
    livechat = servers.livechat(LIVECHAT_CHANNELS_LAYER=redis.url(), LIVECHAT_CHANNELS_CAPACITY="5")
    room = fresh_room("stalled").replace("-", "_")
    redis.cli("ZADD", f"asgi:group:chat_{room}", "1e12", "stalled.consumer")

    async def scenario():
        client = await Client.open(livechat.ws_url(room, ""), "on livechat")
        await until(lambda: bridge_in(redis, room), "the bridge in the group")
        for n in range(8):
            await client.send(n)
        await client.until(lambda frames: len(frames) == 8, "every message accepted")
        await client.close()

    asyncio.run(scenario())
    wait_for(lambda: livechat.metric("livechat_channels_sent_total", outcome="sent") == 8, "8 sent")
    assert redis.cli("ZCARD", "asgistalled.consumer") == "5"
    assert livechat.metric("livechat_channels_sent_total", outcome="over_capacity") == 3
    # Logged at most once a minute: the first line counts the messages of the send that found the
    # group full (1 to 3, as the 8 were batched); the metric above counts them all.
    assert re.search(r"chat_stalled\S* at their capacity did not get [123] message\(s\)", livechat.log.read_text())
