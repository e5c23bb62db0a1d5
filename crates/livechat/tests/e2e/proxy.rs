//! Two nodes on one Redis behind nginx with the project's own site file: the main contract rows
//! through the proxy, and the client's real address reaching the nodes.

use std::net::{IpAddr, SocketAddr};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpSocket;
use tokio_websockets::{ClientBuilder, Message};

use crate::nginx::Nginx;
use crate::support::{Client, RedisServer, Server, eventually, http};

async fn through(proxy: &Nginx, room: &str) -> Client {
    through_with(proxy, room, "").await
}

/// A client through nginx with more of the connect URL's query (`&since=...`).
async fn through_with(proxy: &Nginx, room: &str, query: &str) -> Client {
    let uri = format!("ws://{}/ws/chat/{room}/?meta=1{query}", proxy.addr);
    let (ws, _) = ClientBuilder::new()
        .uri(&uri)
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{uri}: {e}"));
    Client { ws }
}

#[tokio::test]
async fn two_nodes_behind_nginx_serve_one_room_and_see_the_real_client() {
    let redis = RedisServer::start().await;
    let trusted = ["--trusted-proxies", "127.0.0.1/32"];
    let (a, b) = (
        Server::node(&redis, &trusted).await,
        Server::node(&redis, &trusted).await,
    );
    let proxy = Nginx::start(&[a.addr, b.addr]).await;

    // nginx balances connections over both nodes; everyone sees every message, in one order.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(through(&proxy, "proxied").await);
    }
    let body = json!({"message": "through nginx", "room": "proxied"}).to_string();
    let sent = http(
        proxy.addr,
        "POST",
        "/chat/send/",
        Some(body.as_bytes()),
        &[],
    )
    .await;
    assert_eq!(sent.status, 200, "{sent:?}");
    a.post_message("proxied", json!("straight to a")).await;
    b.post_message("proxied", json!("straight to b")).await;
    clients[0]
        .send_json(json!({"message": "from a client"}))
        .await;
    for client in &mut clients {
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(client.recv().await["message"].clone());
        }
        assert_eq!(seen.len(), 4);
        assert!(seen.contains(&json!("through nginx")) && seen.contains(&json!("from a client")));
    }
    let history = http(proxy.addr, "GET", "/chat/history/?room=proxied", None, &[]).await;
    assert_eq!(history.json()["chat_history"].as_array().unwrap().len(), 4);
    let epoch = history.json()["epoch"].as_str().unwrap().to_owned();

    // Resuming through nginx, on whichever node it picks: the missed messages, then caught up.
    for _ in 0..2 {
        let mut resumed = through_with(&proxy, "proxied", &format!("&since=2&epoch={epoch}")).await;
        let replayed = [resumed.recv().await, resumed.recv().await];
        assert_eq!(
            replayed.map(|frame| frame["id"].clone()),
            [json!(3), json!(4)]
        );
        let caught_up = resumed.recv().await;
        assert_eq!(
            (&caught_up["event"], &caught_up["id"]),
            (&json!("caught_up"), &json!(4))
        );
    }

    // A client on 127.0.0.2 breaks the size limit: the node that closes it logs its real
    // address, taken from X-Forwarded-For, not nginx's 127.0.0.1.
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new("127.0.0.2".parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    let stream = socket.connect(proxy.addr).await.unwrap();
    let (mut oversized, _) = ClientBuilder::new()
        .uri(&format!("ws://{}/ws/chat/proxied/", proxy.addr))
        .unwrap()
        .connect_on(stream)
        .await
        .expect("a WebSocket through nginx from 127.0.0.2");
    let _ = oversized
        .send(Message::text("x".repeat(2 * 1024 * 1024)))
        .await;
    // The server closes with 1009 (what the client reads after that is not the point here).
    while let Some(Ok(_)) = oversized.next().await {}
    eventually("the close logged with the client's address", || async {
        [&a, &b]
            .iter()
            .any(|node| node.logged(&["closed a connection", "peer=127.0.0.2", "code=1009"]))
    })
    .await;

    // nginx's access lines carry the path, never the query, where tokens travel.
    let query = "/chat/history/?room=proxied&token=never-in-a-log";
    assert_eq!(http(proxy.addr, "GET", query, None, &[]).await.status, 200);
    eventually("nginx's access line", || async {
        proxy
            .access_log()
            .contains("\"GET /chat/history/ HTTP/1.1\" 200")
    })
    .await;
    assert!(!proxy.access_log().contains("never-in-a-log"));
}
