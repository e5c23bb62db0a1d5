"""The publish hook: the app refuses a banned word with its own reason and trims whitespace."""
import asyncio

from support import BANNED_REASON, BANNED_WORD, Chat, alice_and_bob, close_all, fresh_room, sign_in


def test_the_banned_word_is_refused_with_the_apps_reason_and_not_stored(app, servers):
    livechat = servers.livechat(**app.hooks())
    room = fresh_room()

    async def scenario():
        alice = await Chat.open(livechat, room, sign_in(app, "alice"))
        nonce = await alice.send(f"what a {BANNED_WORD.upper()} this is")
        assert await alice.answer(nonce) == {"error": BANNED_REASON, "for": "message", "nonce": nonce}
        await alice.publish(f"{BANNED_WORD}s and other words are fine")  # only the whole word is banned
        await alice.close()

    asyncio.run(scenario())
    assert [item["message"] for item in livechat.history(room)] == [f"{BANNED_WORD}s and other words are fine"]


def test_a_message_with_surrounding_whitespace_arrives_trimmed(app, servers):
    livechat = servers.livechat(**app.hooks())
    room = fresh_room()

    async def scenario():
        chats = await alice_and_bob(app, room, livechat)
        echo = await chats["alice"].publish("  \n tidy me\t ")
        assert echo["message"] == "tidy me"
        assert (await chats["bob"].receive(lambda frame: frame.get("id") == echo["id"]))["message"] == "tidy me"
        assert (await chats["alice"].publish("already tidy"))["message"] == "already tidy"
        await close_all(chats)

    asyncio.run(scenario())
    assert [item["message"] for item in livechat.history(room)] == ["tidy me", "already tidy"]
