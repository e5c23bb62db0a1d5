//! Byte bounds a client cannot push past: history pages and history kept per room (both engines).

use serde_json::{Value, json};

use crate::support::Server;

/// A message of about `kib` KiB, numbered.
fn filler(n: usize, kib: usize) -> Value {
    json!({ "n": n, "pad": "x".repeat(kib * 1024) })
}

async fn page(server: &Server, query: &str) -> Value {
    let answer = server
        .http("GET", &format!("/chat/history/{query}"), None)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()
}

fn numbers(page: &Value) -> Vec<u64> {
    page["chat_history"]
        .as_array()
        .expect("list")
        .iter()
        .map(|item| item["message"]["n"].as_u64().expect("n"))
        .collect()
}

#[tokio::test]
async fn a_history_page_stops_at_its_byte_cap_and_says_where_to_read_on() {
    let server = Server::start(&["--history-page-bytes", "300000"]).await;
    for n in 1..=10 {
        server.post_message("paged", filler(n, 100)).await;
    }
    // The latest messages that fit, then older ones page after page, each exactly once.
    let mut seen = Vec::new();
    let mut query = "?room=paged&limit=1000".to_owned();
    loop {
        let answer = page(&server, &query).await;
        let got = numbers(&answer);
        assert!(!got.is_empty() && got.len() <= 2, "{got:?}");
        seen.splice(0..0, got);
        if answer.get("more").is_none() {
            assert!(answer.get("next").is_none());
            break;
        }
        assert_eq!(answer["more"], true);
        let before = answer["next"]["before"].as_u64().expect("next.before");
        query = format!("?room=paged&limit=1000&before={before}");
    }
    assert_eq!(seen, (1..=10).collect::<Vec<u64>>());
    // Forward with after=, the cursor is next.after.
    let answer = page(&server, "?room=paged&after=0").await;
    assert_eq!(numbers(&answer), [1, 2]);
    assert_eq!(answer["next"], json!({"after": 2}));
    // Without a cap to reach, the answer is the seed's shape (and the room's epoch).
    let answer = page(&server, "?room=paged&limit=1").await;
    let mut keys: Vec<&String> = answer.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["chat_history", "epoch"], "{answer}");
}

#[tokio::test]
async fn a_room_keeps_at_most_its_bytes_of_history() {
    let server = Server::start(&["--history-max-bytes", "350000"]).await;
    for n in 1..=10 {
        server.post_message("kept", filler(n, 100)).await;
    }
    let kept = numbers(&page(&server, "?room=kept&limit=1000").await);
    assert_eq!(kept, [8, 9, 10], "the newest that fit in 350,000 bytes");
    // One message larger than the whole cap is kept alone.
    server.post_message("kept", filler(11, 400)).await;
    assert_eq!(numbers(&page(&server, "?room=kept").await), [11]);
}
