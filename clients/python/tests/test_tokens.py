"""mint_token: tokens the real server accepts, with the claims `livechat token` writes, and the
refusals each claim brings."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

import pytest
from conftest import BINARY, JWT_SECRET, LivechatServer

from livechat import HTTPClient, LivechatError, mint_token, token_claims


def test_the_claims_are_those_livechat_token_writes() -> None:
    minted = subprocess.run(
        [BINARY, "token", "--sub", "alice", "--name", "Alice", "--rooms", "lobby,dev-*", "--ttl", "1h", "--read-only"],
        env={"PATH": os.environ.get("PATH", ""), "LIVECHAT_JWT_SECRET": JWT_SECRET},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    theirs = token_claims(minted)
    ours = token_claims(
        mint_token(JWT_SECRET, "alice", name="Alice", rooms=["lobby", "dev-*"], ttl=3600, publish=False, now=theirs["iat"])
    )
    assert ours == theirs
    assert token_claims(mint_token(JWT_SECRET, 42, moderate=True, now=0, ttl=60)) == {
        "sub": "42",
        "exp": 60,
        "iat": 0,
        "moderate": True,
    }
    with pytest.raises(ValueError):
        mint_token(JWT_SECRET, "alice", ttl=0)
    with pytest.raises(TypeError):
        mint_token(JWT_SECRET, "alice", rooms="lobby")


def test_the_server_accepts_them_and_each_claim_counts(livechat: Callable[..., LivechatServer]) -> None:
    server = livechat(
        "--auth", "required", "--jwt-secret", JWT_SECRET, "--jwt-issuer", "https://app.example", "--jwt-audience", "chat"
    )

    def client(**claims: object) -> HTTPClient:
        token = mint_token(JWT_SECRET, "ada", issuer="https://app.example", audience="chat", **claims)  # type: ignore[arg-type]
        return HTTPClient(server.url, token=token)

    answer = client(name="Ada").publish("signed", "lobby")
    [stored] = server.http().history("lobby")["chat_history"]
    assert stored["id"] == answer["id"] and stored["user"] == {"id": "ada", "name": "Ada"}

    def status(call: Callable[[], object]) -> int:
        with pytest.raises(LivechatError) as refused:
            call()
        return refused.value.status

    assert status(lambda: client(rooms=["dev-*"]).publish("hi", "lobby")) == 403
    client(rooms=["dev-*"]).publish("hi", "dev-1")
    assert status(lambda: client(publish=False).publish("hi", "lobby")) == 403
    assert status(lambda: client().ban("bo")) == 403
    assert client(moderate=True).ban("bo")["created_by"] == "ada"
    wrong_audience = HTTPClient(server.url, token=mint_token(JWT_SECRET, "ada", issuer="https://app.example"))
    assert status(lambda: wrong_audience.publish("hi")) == 401
    wrong_key = HTTPClient(server.url, token=mint_token("another secret", "ada", issuer="https://app.example", audience="chat"))
    assert status(lambda: wrong_key.publish("hi")) == 401
