//! What a server exposes, said at start and switchable: with auth off (the original service's
//! mode) every message is stored and anyone can read it, list rooms and open the page, unless
//! the operator says otherwise.

use serde_json::json;

use crate::support::{Server, handshake_with, on_redis};

const KEY: &str = "exposure-server-key";

#[tokio::test]
async fn the_start_says_what_is_kept_where_and_who_can_read_it() {
    let server = Server::start(&[]).await;
    let kept = if on_redis() {
        "in Redis streams at redis://"
    } else {
        "history.sqlite3"
    };
    assert!(
        server.logged(&[
            "what is kept: messages are stored",
            kept,
            "history can be read by anyone who can reach the server"
        ]),
        "the start-up lines say what is kept"
    );
    let store = if on_redis() {
        "history_store=redis-streams"
    } else {
        "history_store=sqlite"
    };
    assert!(server.logged(&["livechat ready", store]));
    let short = Server::start(&["--auth", "required", "--jwt-secret", "short"]).await;
    assert!(short.logged(&["LIVECHAT_JWT_SECRET is 5 bytes long"]));
}

#[tokio::test]
async fn the_page_can_be_turned_off() {
    let server = Server::start(&["--page", "off"]).await;
    for path in ["/", "/r/lobby", "/assets/app.js"] {
        assert_eq!(server.http("GET", path, None).await.status, 404, "{path}");
    }
    assert!(server.logged(&["the chat page is off"]));
    // The API is untouched, and so is the client library, which other pages use.
    server.post_message("lobby", json!("still chatting")).await;
    let library = server.http("GET", "/livechat.js", None).await;
    assert_eq!(library.status, 200, "{library:?}");
    assert!(
        library
            .headers
            .to_ascii_lowercase()
            .contains("content-type: text/javascript"),
        "{library:?}"
    );
    let file = include_str!("../../../../clients/js/livechat.js");
    assert_eq!(
        library.body, file,
        "the library served is the one in clients/js"
    );
}

#[tokio::test]
async fn history_reads_kept_to_the_server_key() {
    let server = Server::start(&["--history-reads", "api-key", "--api-key", KEY]).await;
    server.post_message("lobby", json!("private")).await;
    let refused = server.http("GET", "/chat/history/?room=lobby", None).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("LIVECHAT_HISTORY_READS=api-key")
    );
    let read = server.get_as(KEY, "/chat/history/?room=lobby").await;
    assert_eq!(read.json()["chat_history"][0]["message"], "private");
    // Resuming replays history: refused at the handshake, with the reason; live is fine.
    let resume = handshake_with(server.addr, "/ws/chat/lobby/?since=0", &[]).await;
    assert_eq!(resume.status, 403);
    assert!(resume.json()["error"].as_str().unwrap().contains("?since="));
    let mut live = server.join("lobby").await;
    server.post_message("lobby", json!("live")).await;
    assert_eq!(live.recv().await, json!({"message": "live"}));
    // The page is told, so that it follows the room live only.
    let page = server.http("GET", "/r/lobby", None).await;
    assert!(
        page.body
            .contains(r#"<meta name="livechat-history" content="api-key">"#)
    );
}

#[tokio::test]
async fn history_reads_off_answer_as_the_original_service_did() {
    let server = Server::start(&["--history-reads", "off"]).await;
    server.post_message("lobby", json!("kept, not shown")).await;
    let read = server.http("GET", "/chat/history/", None).await;
    assert_eq!(
        (read.status, read.json()),
        (200, json!({"chat_history": []}))
    );
    let resume = handshake_with(server.addr, "/ws/chat/lobby/?since=0", &[]).await;
    assert_eq!(resume.status, 403);
    assert!(
        resume.json()["error"]
            .as_str()
            .unwrap()
            .contains("turned off")
    );
}

#[tokio::test]
async fn the_room_list_can_be_kept_to_the_server_key_or_turned_off() {
    let server = Server::start(&["--room-list", "api-key", "--api-key", KEY]).await;
    assert_eq!(server.http("GET", "/chat/rooms/", None).await.status, 403);
    let listed = server.get_as(KEY, "/chat/rooms/").await;
    assert_eq!(listed.status, 200, "{listed:?}");
    let off = Server::start(&["--room-list", "off"]).await;
    let refused = off.http("GET", "/chat/rooms/", None).await;
    assert_eq!(refused.status, 403);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("LIVECHAT_ROOM_LIST=off")
    );
}

/// `LIVECHAT_HISTORY_MAX_COUNT=0`: nothing is kept; a resume is told plainly what it cannot get.
#[tokio::test]
async fn storing_nothing_is_said_and_a_resume_is_told_of_the_gap() {
    let server = Server::start(&["--history-max-count", "0"]).await;
    assert!(server.logged(&["no message is kept (LIVECHAT_HISTORY_MAX_COUNT=0)"]));
    let mut live = server.join("lobby").await;
    for n in 1..=3 {
        server.post_message("lobby", json!(n)).await;
        assert_eq!(
            live.recv().await,
            json!({"message": n}),
            "delivered, not kept"
        );
    }
    assert!(server.history("?room=lobby").await.is_empty());
    let mut resumed = server.connect("/ws/chat/lobby/?since=1").await;
    let gap = resumed.recv().await;
    assert_eq!(
        (&gap["event"], &gap["from"], &gap["to"]),
        (&json!("gap"), &json!(2), &json!(3)),
        "{gap}"
    );
    assert_eq!(resumed.recv().await["event"], "caught_up");
}
