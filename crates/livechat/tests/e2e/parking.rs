//! Idle connections park (no task, no registration with the runtime's poller) and lose nothing
//! by it: they are delivered to, answer pings and closes, notice a client gone, a dead peer and
//! a shutdown, and take a task again for as long as their client is busy.

use serde_json::json;
use tokio_websockets::Message;

use crate::support::{Event, Server, eventually};

/// The value of an unlabelled series in the server's scrape.
async fn gauge(server: &Server, name: &str) -> f64 {
    let scrape = server.http("GET", "/metrics", None).await.body;
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the scrape:\n{scrape}"))
}

async fn parked(server: &Server) -> f64 {
    gauge(server, "livechat_connections_parked").await
}

#[tokio::test]
async fn parked_connections_are_delivered_to_answer_and_close() {
    let mut server = Server::start(&[]).await;
    let mut alice = server.join("quiet").await;
    let mut bob = server.join("quiet").await;
    let mut carol = server.join("quiet").await;
    let dave = server.join("quiet").await;
    eventually("every idle connection parked", || async {
        parked(&server).await == 4.0
    })
    .await;

    // Delivered to while parked: written into their sockets, no task woken.
    server.post_message("quiet", json!("while you slept")).await;
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(client.recv().await["message"], "while you slept");
    }
    assert_eq!(parked(&server).await, 4.0, "deliveries do not unpark");

    // A ping wakes one up; it answers, and parks again once its client is quiet.
    let pong = alice.ping("awake?").await;
    assert!(pong.is_pong(), "{pong:?}");
    assert_eq!(&*pong.into_payload(), b"awake?");

    // Its task, back for the ping, publishes: stored and delivered, its author included.
    alice.send_json(json!({"message": "good morning"})).await;
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(client.recv().await["message"], "good morning");
    }
    eventually("the busy connection parked again", || async {
        parked(&server).await == 4.0
    })
    .await;

    // A client that hangs up is noticed while parked.
    drop(dave);
    eventually("the hung-up connection gone", || async {
        gauge(&server, "livechat_connections").await == 3.0
    })
    .await;
    assert_eq!(parked(&server).await, 3.0);

    // A close handshake from a parked connection is answered.
    bob.send_raw(Message::close(None, "")).await;
    match bob.next_event().await {
        Event::Closed(code, _) => assert_eq!(code, 1000),
        other => panic!("{other:?}"),
    }

    // A shutdown closes parked connections with 1001, and the server waits for them.
    eventually("two parked", || async { parked(&server).await == 2.0 }).await;
    let stopping = tokio::spawn(async move {
        let status = server.stop().await;
        assert!(status.success(), "{status:?}");
    });
    for client in [&mut alice, &mut carol] {
        assert_eq!(
            client.recv_close().await,
            (1001, "server shutting down".to_owned())
        );
    }
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_parked_client_that_stops_answering_pings_is_closed() {
    let server = Server::start(&["--ping-interval", "1s", "--pong-timeout", "1s"]).await;
    // Never reads: it never answers a ping.
    let _silent = server.join("pinged").await;
    eventually("the connection parked", || async {
        parked(&server).await == 1.0
    })
    .await;
    eventually("the silent client closed", || async {
        gauge(&server, "livechat_connections").await == 0.0
    })
    .await;
    assert_eq!(parked(&server).await, 0.0);
}

#[tokio::test]
async fn a_busy_connection_keeps_its_task_and_parks_once_quiet() {
    let server = Server::start(&[]).await;
    let mut talker = server.join("busy").await;
    eventually("parked after opening", || async {
        parked(&server).await == 1.0
    })
    .await;
    // Sends one message after another: it takes a task and keeps it while it talks.
    for n in 0..8 {
        talker.send_json(json!({"message": n})).await;
        assert_eq!(talker.recv().await["message"], n);
        assert_eq!(parked(&server).await, 0.0, "message {n}");
    }
    eventually("parked once quiet", || async {
        parked(&server).await == 1.0
    })
    .await;
}
