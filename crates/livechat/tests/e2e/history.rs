//! CONTRACT section 2: durable history with ids and timestamps, paging, retention, restarts.

use serde_json::json;

use crate::support::Server;

fn ids(page: &[serde_json::Value]) -> Vec<u64> {
    page.iter().map(|m| m["id"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn posted_and_websocket_messages_appear_with_ids_and_timestamps() {
    let server = Server::start(&[]).await;
    let mut client = server.join("log").await;
    client.send_json(json!({"message": "over ws"})).await;
    client.recv().await;
    server.post_message("log", json!({"over": "http"})).await;
    let page = server.history("?room=log").await;
    assert_eq!(page.len(), 2);
    assert_eq!(page[0]["message"], "over ws");
    assert_eq!(page[1]["message"], json!({"over": "http"}));
    assert_eq!(ids(&page), [1, 2]);
    for message in &page {
        assert_eq!(message["room"], "log");
        assert!(message["ts"].as_u64().unwrap() > 1_600_000_000_000);
    }
    assert!(page[0]["ts"].as_u64() <= page[1]["ts"].as_u64());
}

#[tokio::test]
async fn limit_before_and_after_page_correctly() {
    let server = Server::start(&[]).await;
    for n in 1..=30 {
        server.post_message("pages", json!(n)).await;
    }
    assert_eq!(server.history("?room=pages").await.len(), 30);
    assert_eq!(
        ids(&server.history("?room=pages&limit=3").await),
        [28, 29, 30]
    );
    assert_eq!(
        ids(&server.history("?room=pages&limit=3&before=10").await),
        [7, 8, 9]
    );
    assert_eq!(
        ids(&server.history("?room=pages&limit=3&after=10").await),
        [11, 12, 13]
    );
    assert_eq!(ids(&server.history("?room=pages&after=28").await), [29, 30]);
    assert_eq!(ids(&server.history("?room=pages&before=3").await), [1, 2]);
    assert_eq!(
        ids(&server
            .history("?room=pages&after=5&before=9&limit=100")
            .await),
        [6, 7, 8]
    );
    assert!(server.history("?room=pages&after=30").await.is_empty());
    assert!(server.history("?room=pages&limit=0").await.is_empty());
    assert!(server.history("?room=nobody_here").await.is_empty());
    // Oldest first, and the default page is 50.
    for n in 31..=60 {
        server.post_message("pages", json!(n)).await;
    }
    let page = server.history("?room=pages").await;
    assert_eq!(page.len(), 50);
    assert_eq!(page[0]["id"], 11);
    assert_eq!(server.history("?room=pages&limit=5000").await.len(), 60);
    for bad in ["limit=x", "before=-1", "after=1.5", "limit=1&limit=2"] {
        let answer = server
            .http("GET", &format!("/chat/history/?room=pages&{bad}"), None)
            .await;
        assert_eq!(answer.status, 400, "{bad}");
        assert!(answer.json()["error"].is_string());
    }
    let answer = server
        .http("GET", "/chat/history/?room=no%20spaces", None)
        .await;
    assert_eq!(answer.status, 400);
}

#[tokio::test]
async fn the_default_room_is_configurable() {
    let server = Server::start(&["--default-room", "general"]).await;
    let mut general = server.join("general").await;
    let answer = server
        .http("POST", "/chat/send/", Some(r#"{"message": "hi"}"#))
        .await;
    assert_eq!(answer.json()["room"], "general");
    assert_eq!(general.recv().await, json!({"message": "hi"}));
    let page = server.history("").await;
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["room"], "general");
}

#[tokio::test]
async fn history_and_ids_survive_a_restart() {
    let mut server = Server::start(&[]).await;
    for n in 1..=3 {
        server.post_message("durable", json!(n)).await;
    }
    assert!(server.stop().await.success());
    server.restart().await;
    assert_eq!(ids(&server.history("?room=durable").await), [1, 2, 3]);
    let answer = server.post_message("durable", json!(4)).await;
    assert_eq!(answer["id"], 4, "ids continue after a restart");
}

#[tokio::test]
async fn retention_keeps_the_newest_per_room_and_ids_keep_growing() {
    let mut server = Server::start(&["--history-max-count", "5"]).await;
    for n in 1..=12 {
        server.post_message("kept", json!(n)).await;
    }
    assert_eq!(ids(&server.history("?room=kept").await), [8, 9, 10, 11, 12]);
    server.stop().await;
    server.restart().await;
    assert_eq!(server.post_message("kept", json!(13)).await["id"], 13);
}

#[tokio::test]
async fn retention_by_age() {
    let server = Server::start(&["--history-max-age", "1s"]).await;
    server.post_message("fleeting", json!("old")).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.history("?room=fleeting").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "old message still there"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(server.post_message("fleeting", json!("new")).await["id"], 2);
}

#[tokio::test]
async fn the_memory_store_serves_the_same_api() {
    let server = Server::start(&["--store", "memory"]).await;
    server.post_message("m", json!("a")).await;
    server.post_message("m", json!("b")).await;
    assert_eq!(ids(&server.history("?room=m&after=1").await), [2]);
}

#[tokio::test]
async fn rooms_written_lately_are_listed_whoever_is_in_them() {
    let server = Server::start(&[]).await;
    server.post_message("older", json!(1)).await;
    server.post_message("newer", json!(2)).await;
    let listed = server.http("GET", "/chat/rooms/", None).await.json();
    assert_eq!(listed["rooms"], json!([]), "nobody is connected");
    let recent: Vec<&str> = listed["recent"]
        .as_array()
        .expect("recent rooms")
        .iter()
        .map(|room| room["room"].as_str().expect("a room"))
        .collect();
    assert_eq!(recent, ["newer", "older"]);
    assert!(listed["recent"][0]["ts"].as_u64().expect("a time") > 0);
}
