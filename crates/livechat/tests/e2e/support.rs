//! Test support: the real `livechat` binary on a free port with its own data directory, real
//! WebSocket clients over TCP, and a minimal HTTP/1.1 client.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_websockets::{ClientBuilder, MaybeTlsStream, Message, Payload, WebSocketStream};

/// Longest a test waits for anything the server should do promptly.
pub const PATIENCE: Duration = Duration::from_secs(15);

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// What was run: the server, or a wrapper (`prlimit`) and its arguments first in `args`.
    program: String,
    args: Vec<String>,
    /// Owns the temporary data directory, when the test did not bring its own.
    _temp: Option<tempfile::TempDir>,
    /// The Redis this server uses, when the suite runs on the Redis engine.
    pub redis: Option<RedisServer>,
    /// Its latest log lines (the newest `LOG_LINES_KEPT`).
    log: Arc<Mutex<VecDeque<String>>>,
}

const LOG_LINES_KEPT: usize = 2000;

/// Which engine the contract tests run on: `LIVECHAT_TEST_ENGINE=redis` for the Redis engine
/// (each server then gets a Redis of its own), anything else for the embedded one.
pub fn on_redis() -> bool {
    std::env::var("LIVECHAT_TEST_ENGINE").is_ok_and(|engine| engine == "redis")
}

impl Server {
    /// Starts a server with a fresh data directory (and Redis, see `on_redis`) and extra flags.
    pub async fn start(args: &[&str]) -> Server {
        if on_redis() {
            let redis = RedisServer::start().await;
            let mut server = Server::node(&redis, args).await;
            server.redis = Some(redis);
            return server;
        }
        let temp = tempfile::tempdir().expect("temp dir");
        let mut server = Server::start_in(temp.path(), args).await;
        server._temp = Some(temp);
        server
    }

    /// Starts a node of a Redis deployment (refreshing its room registration every 0.5 s).
    pub async fn node(redis: &RedisServer, args: &[&str]) -> Server {
        Server::node_via(&redis.url(), args).await
    }

    /// Starts a node of a Redis deployment that reaches Redis at `url` (a proxy, say).
    pub async fn node_via(url: &str, args: &[&str]) -> Server {
        let mut all = vec!["--redis-url", url, "--node-ttl", "1500ms"];
        all.extend_from_slice(args);
        let temp = tempfile::tempdir().expect("temp dir");
        let mut server = Server::start_in(temp.path(), &all).await;
        server._temp = Some(temp);
        server
    }

    /// Starts a server on `data_dir` (kept by the caller), on a free port.
    pub async fn start_in(data_dir: &Path, args: &[&str]) -> Server {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Server::spawn(data_dir.to_path_buf(), "127.0.0.1:0".parse().unwrap(), args).await
    }

    /// Starts a server (embedded engine) that may open at most `files` files (`prlimit`).
    pub async fn start_with_file_limit(files: u32, args: &[&str]) -> Server {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut all = vec![
            format!("--nofile={files}:{files}"),
            env!("CARGO_BIN_EXE_livechat").to_owned(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let mut server = Server::launch(
            "prlimit",
            temp.path().to_path_buf(),
            "127.0.0.1:0".parse().unwrap(),
            all,
        )
        .await;
        server._temp = Some(temp);
        server
    }

    async fn spawn(data_dir: PathBuf, bind: SocketAddr, args: Vec<String>) -> Server {
        Server::launch(env!("CARGO_BIN_EXE_livechat"), data_dir, bind, args).await
    }

    /// Runs `program` (the server, or a wrapper that execs it with `args` first).
    async fn launch(
        program: &str,
        data_dir: PathBuf,
        bind: SocketAddr,
        args: Vec<String>,
    ) -> Server {
        let mut child = Command::new(program)
            .args(&args)
            .arg("--bind")
            .arg(bind.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .env("LIVECHAT_LOG", "info,livechat=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start livechat");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        // The start-up lines are kept too: they say what the server runs with.
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let addr = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.expect("read stderr") {
                eprintln!("[livechat] {line}");
                let listening = line.split("listening on http").nth(1);
                if let Some(rest) = listening.and_then(|rest| rest.split("://").nth(1)) {
                    return rest.trim().parse::<SocketAddr>().expect("address");
                }
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(line);
            }
            panic!("livechat exited before listening");
        })
        .await
        .expect("livechat did not start listening in time");
        // Keep draining the log so the server never blocks on a full pipe; it shows on failure.
        let kept = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[livechat {addr}] {line}");
                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                if kept.len() == LOG_LINES_KEPT {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        Server {
            child,
            addr,
            data_dir,
            program: program.to_owned(),
            args,
            _temp: None,
            redis: None,
            log,
        }
    }

    /// Stops with SIGTERM and returns the exit status.
    pub async fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("livechat did not exit after SIGTERM")
            .expect("wait")
    }

    /// Kills with SIGKILL: no shutdown work at all.
    pub async fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait().await;
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Starts the server again on the same data directory and port, with the same flags.
    pub async fn restart(&mut self) {
        let mut again = Server::launch(
            &self.program,
            self.data_dir.clone(),
            self.addr,
            self.args.clone(),
        )
        .await;
        again._temp = self._temp.take();
        again.redis = self.redis.take();
        *self = again;
    }

    /// Whether a log line the server wrote since it started contains all of `parts`.
    pub fn logged(&self, parts: &[&str]) -> bool {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .any(|line| parts.iter().all(|part| line.contains(part)))
    }

    /// The latest log line the server wrote that contains all of `parts`.
    pub fn last_logged(&self, parts: &[&str]) -> Option<String> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .rev()
            .find(|line| parts.iter().all(|part| line.contains(part)))
            .cloned()
    }

    /// How many log lines the server wrote since it started contain all of `parts`.
    pub fn log_count(&self, parts: &[&str]) -> usize {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter()
            .filter(|line| parts.iter().all(|part| line.contains(part)))
            .count()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Joins `room` on the seed's path.
    pub async fn join(&self, room: &str) -> Client {
        self.connect(&format!("/ws/chat/{room}/")).await
    }

    pub async fn connect(&self, path: &str) -> Client {
        match self.connect_with(path, &[]).await {
            Ok(client) => client,
            Err(error) => {
                // Once more by hand, for the server's reason.
                let answer = handshake(self.addr, path).await;
                panic!("connect {path}: {error}; again: {answer:?}")
            }
        }
    }

    /// Connects with extra handshake headers; the error says why the server refused.
    pub async fn connect_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, String> {
        let uri = self.ws_url(path);
        let mut builder = ClientBuilder::new().uri(&uri).expect("uri");
        for (name, value) in headers {
            builder = builder
                .add_header(
                    name.parse().expect("header name"),
                    value.parse().expect("header value"),
                )
                .expect("header");
        }
        let (ws, _) = builder.connect().await.map_err(|e| e.to_string())?;
        Ok(Client { ws })
    }

    pub async fn http(&self, method: &str, path: &str, body: Option<&str>) -> HttpAnswer {
        http(self.addr, method, path, body.map(str::as_bytes), &[]).await
    }

    /// `GET path` as a caller with `token` (or the server key) in `Authorization: Bearer`.
    pub async fn get_as(&self, token: &str, path: &str) -> HttpAnswer {
        let bearer = format!("Bearer {token}");
        http(self.addr, "GET", path, None, &[("Authorization", &bearer)]).await
    }

    pub async fn post_message(&self, room: &str, message: Value) -> Value {
        let body = serde_json::json!({ "message": message, "room": room }).to_string();
        let answer = self.http("POST", "/chat/send/", Some(&body)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()
    }

    /// A request as `credential` (a token or the server key) in `Authorization: Bearer`, with a
    /// JSON body if given.
    pub async fn call(
        &self,
        credential: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> HttpAnswer {
        let bearer = format!("Bearer {credential}");
        let body = body.map(|body| body.to_string());
        let headers = [("Authorization", bearer.as_str())];
        http(
            self.addr,
            method,
            path,
            body.as_deref().map(str::as_bytes),
            &headers,
        )
        .await
    }

    /// `POST /chat/send/` as `credential` (a token or the server key).
    pub async fn post_message_as(&self, credential: &str, room: &str, message: Value) -> Value {
        let body = serde_json::json!({ "message": message, "room": room }).to_string();
        let bearer = format!("Bearer {credential}");
        let headers = [("Authorization", bearer.as_str())];
        let answer = http(
            self.addr,
            "POST",
            "/chat/send/",
            Some(body.as_bytes()),
            &headers,
        )
        .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()
    }

    pub async fn history(&self, query: &str) -> Vec<Value> {
        let answer = self
            .http("GET", &format!("/chat/history/{query}"), None)
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()["chat_history"]
            .as_array()
            .expect("chat_history list")
            .clone()
    }
}

/// An HS256 token for `sub` (named `sub`, expiring in 2096) with `extra` claims.
pub fn signed_token(secret: &str, sub: &str, extra: Value) -> String {
    let mut claims = serde_json::json!({"sub": sub, "name": sub, "exp": 4_000_000_000u64});
    if let (Some(claims), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        claims.extend(extra);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a token")
}

/// Polls `check` until it holds, for at most `PATIENCE`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a client saw next.
#[derive(Debug)]
pub enum Event {
    Frame(Value),
    Closed(u16, String),
}

impl Client {
    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// Sends bytes in a text frame without checking they are UTF-8.
    pub async fn send_text_bytes(&mut self, bytes: Vec<u8>) {
        self.send_raw(Message::text(Payload::from(bytes))).await;
    }

    /// Sends a ping and returns the next frame of any kind (the pong, from a live server).
    pub async fn ping(&mut self, payload: &'static str) -> Message {
        self.send_raw(Message::ping(payload)).await;
        tokio::time::timeout(PATIENCE, self.ws.next())
            .await
            .expect("an answer in time")
            .expect("the connection is open")
            .expect("a frame")
    }

    /// The next data frame or the close frame; panics on timeout.
    pub async fn next_event(&mut self) -> Event {
        self.next_event_within(PATIENCE)
            .await
            .expect("timed out waiting for a frame")
    }

    pub async fn next_event_within(&mut self, wait: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match next {
                None => return Some(Event::Closed(1006, "connection ended".into())),
                Some(Err(e)) => return Some(Event::Closed(1006, e.to_string())),
                Some(Ok(message)) => {
                    if let Some((code, reason)) = message.as_close() {
                        return Some(Event::Closed(code.into(), reason.to_owned()));
                    }
                    if let Some(text) = message.as_text() {
                        let value = serde_json::from_str(text)
                            .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}"));
                        return Some(Event::Frame(value));
                    }
                }
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        match self.next_event().await {
            Event::Frame(value) => value,
            closed => panic!("expected a frame, got {closed:?}"),
        }
    }

    /// Asserts nothing arrives for a short while.
    pub async fn expect_silence(&mut self) {
        if let Some(event) = self.next_event_within(Duration::from_millis(300)).await {
            panic!("expected nothing, got {event:?}");
        }
    }

    /// Reads until the close frame, skipping data frames; returns its code and reason.
    pub async fn recv_close(&mut self) -> (u16, String) {
        loop {
            if let Event::Closed(code, reason) = self.next_event().await {
                return (code, reason);
            }
        }
    }
}

#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl HttpAnswer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> HttpAnswer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    // The server may answer (413) before it reads the whole body; then the write fails.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut raw))
        .await
        .expect("HTTP answer in time")
        .expect("read");
    let raw = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP head");
    let status = head[9..12].parse().expect("status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpAnswer {
        status,
        headers: head.to_owned(),
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// The WebSocket handshake as raw HTTP, to see how the server answers before any upgrade.
pub async fn handshake(addr: SocketAddr, path: &str) -> HttpAnswer {
    handshake_with(addr, path, &[]).await
}

/// The same with extra headers; only for handshakes the server refuses (it answers and closes).
pub async fn handshake_with(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> HttpAnswer {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    headers.extend_from_slice(extra);
    http(addr, "GET", path, None, &headers).await
}

/// Reads an HTTP answer's head (through the blank line) off a raw connection, byte by byte so
/// that nothing after it is taken (a WebSocket's first frames).
pub async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(PATIENCE, tcp.read_u8())
            .await
            .expect("the answer in time")
            .expect("the answer");
        head.push(byte);
    }
    String::from_utf8(head).expect("UTF-8 head")
}

/// A real `redis-server` on a free port, with append-only persistence (fsync always) in a
/// temporary directory, so that it can be stopped and started again with its data.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        RedisServer::launch(true).await
    }

    /// Without any persistence: a restart loses every key.
    pub async fn start_volatile() -> RedisServer {
        RedisServer::launch(false).await
    }

    async fn launch(persistent: bool) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let (child, port) =
            spawn_redis_on_free_port(|port| RedisServer::command(port, dir.path(), persistent))
                .await;
        RedisServer {
            child: Some(child),
            port,
            dir,
            persistent,
        }
    }

    fn command(port: u16, dir: &Path, persistent: bool) -> Command {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendfsync", "always", "--appendonly"])
            .arg(if persistent { "yes" } else { "no" })
            .arg("--dir")
            .arg(dir);
        command
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts it (again) on the same port and data.
    pub async fn resume(&mut self) {
        let child = RedisServer::command(self.port, self.dir.path(), self.persistent)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (./scripts/test.sh installs it)");
        self.child = Some(child);
        listening(self.port).await;
    }

    /// Runs a command with `redis-cli` against it; its output.
    pub async fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args).await
    }

    /// Kills it, as a crash or an outage would.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

/// Waits until something accepts connections on `port` (at most `PATIENCE`).
pub async fn listening(port: u16) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a command with `redis-cli` against the Redis (or sentinel) on `port`; its output.
pub async fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .await
        .expect("redis-cli");
    assert!(output.status.success(), "redis-cli {args:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The most memory process `pid` has held so far (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

/// Starts the program `command(port)` makes (a `redis-server`, a sentinel) on a port that was
/// free, and waits until that very process listens there. redis-server cannot be told to pick
/// a port and say which, so a port can be lost to another test between the check and the
/// start: then the process exits (or another answers there) and it is tried again elsewhere.
pub async fn spawn_redis_on_free_port(command: impl Fn(u16) -> Command) -> (Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = command(port)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (./scripts/test.sh installs it)");
        let pid = child.id().expect("a running child");
        if listens_as(&mut child, port, pid).await {
            return (child, port);
        }
        let _ = child.kill().await;
    }
    panic!("redis-server could not keep a free port in five tries");
}

/// Waits until process `pid` answers on `port` (true), or the child exits first (false).
async fn listens_as(child: &mut Child, port: u16, pid: u32) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let ours = format!("process_id:{pid}");
    while tokio::time::Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        let info = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "INFO", "server"])
            .output()
            .await
            .expect("redis-cli");
        let text = String::from_utf8_lossy(&info.stdout);
        if text.contains("process_id:") {
            return text.lines().any(|line| line.trim() == ours);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A real Redis Cluster of three masters (no replicas) on free ports, each `--cluster-enabled`,
/// joined by `redis-cli --cluster create`.
pub struct RedisCluster {
    _masters: Vec<Child>,
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = cluster_ports(3);
        let mut masters = Vec::new();
        for port in &ports {
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("redis-server");
            masters.push(child);
        }
        for port in &ports {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while TcpStream::connect(("127.0.0.1", *port)).await.is_err() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "redis-server did not start"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .await
            .expect("redis-cli");
        assert!(created.success(), "redis-cli --cluster create failed");
        for port in &ports {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .await
                    .expect("redis-cli");
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "cluster not ok");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        RedisCluster {
            _masters: masters,
            ports,
            _dir: dir,
        }
    }

    /// The seed nodes, as `--redis-url` takes them with `--redis-cluster`.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self
            .ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}/"))
            .collect();
        urls.join(",")
    }
}

/// Free ports whose cluster bus port (port + 10000) is free too.
fn cluster_ports(count: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    let mut candidate = 20_000 + (std::process::id() % 5_000) as u16 * 4;
    while ports.len() < count {
        candidate += 1;
        let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free(candidate) && free(candidate + 10_000) {
            ports.push(candidate);
        }
    }
    ports
}
