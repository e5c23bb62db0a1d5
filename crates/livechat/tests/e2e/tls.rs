//! HTTPS and WSS served directly with a certificate the test makes (rcgen), checked by a real TLS
//! client (rustls) that trusts only that certificate.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use tokio_websockets::{ClientBuilder, Message};

use crate::support::{PATIENCE, Server};

struct Certificate {
    _dir: tempfile::TempDir,
    cert: String,
    key: String,
    der: Vec<u8>,
}

fn certificate() -> Certificate {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("a test certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    Certificate {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        der: made.cert.der().to_vec(),
        _dir: dir,
    }
}

async fn tls_to(server: &Server, certificate: &Certificate) -> TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots
        .add(certificate.der.clone().into())
        .expect("trust the test certificate");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the server's certificate")
}

#[tokio::test]
async fn https_and_wss_with_the_configured_certificate() {
    let certificate = certificate();
    let server = Server::start(&[
        "--tls-cert",
        &certificate.cert,
        "--tls-key",
        &certificate.key,
    ])
    .await;

    let mut https = tls_to(&server, &certificate).await;
    let request = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    https.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, https.read_to_string(&mut answer))
        .await
        .expect("an answer")
        .ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The page's own origin over TLS is https:// and the host it reached (here `localhost`).
    let own_origin = "https://localhost";
    let (mut ws, _) = ClientBuilder::new()
        .uri("wss://localhost/ws/chat/secure/")
        .unwrap()
        .add_header("origin".parse().unwrap(), own_origin.parse().unwrap())
        .unwrap()
        .connect_on(tls_to(&server, &certificate).await)
        .await
        .expect("a WebSocket over TLS");
    ws.send(Message::text(json!({"message": "over TLS"}).to_string()))
        .await
        .unwrap();
    let echo = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("an echo")
        .expect("a frame")
        .expect("no error");
    assert_eq!(echo.as_text(), Some(r#"{"message":"over TLS"}"#));

    // A plain-text client gets no HTTP answer from a TLS port.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, plain.read_to_end(&mut seen)).await;
    assert!(!String::from_utf8_lossy(&seen).contains("200 OK"));
}

#[tokio::test]
async fn a_certificate_without_its_key_stops_the_server() {
    let certificate = certificate();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_livechat"))
        .args(["--bind", "127.0.0.1:0", "--tls-cert", &certificate.cert])
        .env("LIVECHAT_DATA_DIR", certificate._dir.path())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("set both or neither"));
}
