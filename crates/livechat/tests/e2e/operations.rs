//! Operating the embedded store with the real binary: a full disk (a small tmpfs as the data
//! directory), data directories it must refuse at start, `livechat backup` of a node at work
//! and `livechat restore`, and `livechat migrate` into Redis. All about the embedded engine: the
//! Redis pass of the test command skips them.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::resume::until_caught_up;
use crate::support::{PATIENCE, RedisServer, Server, eventually};

/// A tmpfs of `size` mounted for one test (the tests run as root), unmounted when dropped, also
/// when the test fails.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("mount point");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount");
        assert!(mounted.success(), "mounting a tmpfs needs root");
        Tmpfs { path, _dir: dir }
    }

    /// Mounts it again read-only (or read-write).
    fn remount(&self, options: &str) {
        let remounted = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.path)
            .status()
            .expect("mount");
        assert!(remounted.success(), "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a server killed on drop may still hold its files open for a moment.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Fills the file system of `dir` with a file of its own: its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    // What is left is smaller than a chunk: take it too.
    while file.write_all(&[0u8; 512]).is_ok() {}
    path
}

/// Runs `livechat ARGS` to its end: exit success and what it wrote to stderr.
async fn livechat(args: &[&str]) -> (bool, String) {
    let output = tokio::time::timeout(
        PATIENCE * 4,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_livechat"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("livechat did not end in time")
    .expect("run livechat");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!("[livechat {args:?}] {stderr}");
    (output.status.success(), stderr)
}

fn integrity(file: &Path) -> String {
    let connection = rusqlite::Connection::open(file).expect("open the history");
    connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity_check")
}

async fn publish(server: &Server, room: &str, message: Value) -> crate::support::HttpAnswer {
    let body = json!({ "message": message, "room": room }).to_string();
    server.http("POST", "/chat/send/", Some(&body)).await
}

async fn metric(server: &Server, name: &str) -> Option<f64> {
    let text = server.http("GET", "/metrics", None).await.body;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn ids(history: &[Value]) -> Vec<u64> {
    history.iter().filter_map(|m| m["id"].as_u64()).collect()
}

#[tokio::test]
async fn a_full_disk_refuses_publishes_keeps_serving_and_resumes_by_itself() {
    let disk = Tmpfs::mount("4m");
    let mut server = Server::start_in(&disk.path, &[]).await;
    let mut listener = server.join("full").await;
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        let answer = publish(&server, "full", json!(n)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        acknowledged.push(answer.json()["id"].as_u64().unwrap());
    }
    let filler = fill(&disk.path);
    // The file's own free pages may take a few more; then the disk is full.
    let big = "x".repeat(16 * 1024);
    let mut refused = 0;
    for _ in 0..200 {
        let answer = publish(&server, "full", json!(big)).await;
        match answer.status {
            200 => acknowledged.push(answer.json()["id"].as_u64().unwrap()),
            507 => {
                assert_eq!(answer.json(), json!({"error": "storage full"}));
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
            status => panic!("unexpected {status}: {answer:?}"),
        }
    }
    assert_eq!(refused, 5, "publishes on a full disk are refused with 507");
    // Over the WebSocket: an error frame with the publish's nonce.
    let mut publisher = server.connect("/ws/chat/full/?meta=1").await;
    publisher
        .send_json(json!({"message": big, "nonce": "on-a-full-disk"}))
        .await;
    let refusal = loop {
        let frame = publisher.recv().await;
        if frame.get("error").is_some() {
            break frame;
        }
    };
    assert_eq!(
        refusal,
        json!({"error": "storage full", "for": "message", "nonce": "on-a-full-disk"})
    );
    // Not ready, and why; reads and live connections go on.
    let ready = server.http("GET", "/readyz", None).await;
    assert_eq!(ready.status, 503);
    assert!(
        ready.json()["reason"]
            .as_str()
            .unwrap()
            .contains("storage full")
    );
    assert_eq!(metric(&server, "livechat_store_full").await, Some(1.0));
    assert_eq!(
        ids(&server.history("?room=full&limit=1000").await),
        acknowledged
    );
    assert!(server.logged(&["storage full: the disk holding the history is full"]));
    assert_eq!(
        server.log_count(&["storage full: the disk holding the history is full"]),
        1,
        "said once, not once per refused publish"
    );

    // Space comes back: publishing and readiness resume without a restart.
    std::fs::remove_file(&filler).expect("free the space");
    let after = publish(&server, "full", json!("space again")).await;
    assert_eq!(after.status, 200, "{after:?}");
    acknowledged.push(after.json()["id"].as_u64().unwrap());
    eventually("ready again", || async {
        server.http("GET", "/readyz", None).await.status == 200
    })
    .await;
    assert_eq!(metric(&server, "livechat_store_full").await, Some(0.0));
    assert_eq!(server.log_count(&["the history store writes again"]), 1);

    // The live member got every acknowledged message, once and in order; so does history.
    let mut delivered = Vec::new();
    while delivered.len() < acknowledged.len() {
        delivered.push(listener.recv().await);
    }
    listener.expect_silence().await;
    let history = server.history("?room=full&limit=1000").await;
    assert_eq!(ids(&history), acknowledged);
    let texts: Vec<&Value> = history.iter().map(|m| &m["message"]).collect();
    let live: Vec<&Value> = delivered.iter().map(|m| &m["message"]).collect();
    assert_eq!(texts, live);
    assert_eq!(server.stop().await.code(), Some(0));
    assert_eq!(integrity(&disk.path.join("history.sqlite3")), "ok");
}

/// Starts the binary on `data_dir`: it must refuse, with one error line naming the file and
/// saying what to do (`advice`).
async fn refuses_to_start(data_dir: &Path, advice: &str) {
    let dir = data_dir.to_str().unwrap();
    let (started, stderr) = livechat(&["--bind", "127.0.0.1:0", "--data-dir", dir]).await;
    assert!(!started, "exit status non-zero");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(errors[0].contains(dir), "names the file: {}", errors[0]);
    assert!(errors[0].contains(advice), "says what to do: {}", errors[0]);
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[tokio::test]
async fn a_data_directory_it_cannot_use_is_refused_at_start_never_replaced() {
    // Read-only: without a history, and with one.
    let disk = Tmpfs::mount("8m");
    disk.remount("ro");
    refuses_to_start(&disk.path, "writable").await;
    disk.remount("rw");
    let mut server = Server::start_in(&disk.path, &[]).await;
    let stored = server.post_message("kept", json!("before")).await;
    server.stop().await;
    disk.remount("ro");
    refuses_to_start(&disk.path, "writable").await;
    disk.remount("rw");
    let server = Server::start_in(&disk.path, &[]).await;
    assert_eq!(server.history("?room=kept").await[0]["id"], stored["id"]);
    drop(server);

    // A file that is not a database, a database that is not livechat's: left as they are.
    let not_sqlite = tempfile::tempdir().unwrap();
    let file = not_sqlite.path().join("history.sqlite3");
    let text = "these are someone's notes, not a database\n".repeat(200);
    std::fs::write(&file, &text).unwrap();
    refuses_to_start(not_sqlite.path(), "LIVECHAT_DATA_DIR").await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    let foreign = tempfile::tempdir().unwrap();
    let file = foreign.path().join("history.sqlite3");
    rusqlite::Connection::open(&file)
        .unwrap()
        .execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        .unwrap();
    refuses_to_start(foreign.path(), "not livechat's history").await;
    let tables: i64 = rusqlite::Connection::open(&file)
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
        .unwrap();
    assert_eq!(tables, 1, "nothing was added to it");

    // A history file damaged in the middle.
    let damaged = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(damaged.path(), &[]).await;
    for n in 0..200 {
        server
            .post_message("lots", json!(format!("{n} {}", "y".repeat(500))))
            .await;
    }
    server.stop().await;
    let file = damaged.path().join("history.sqlite3");
    // Everything into the file itself (a damaged WAL frame is only the WAL's end to SQLite).
    rusqlite::Connection::open(&file)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 8192].fill(0xa5);
    std::fs::write(&file, &bytes).unwrap();
    refuses_to_start(damaged.path(), "livechat restore").await;
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "left as it was");
}

#[tokio::test]
async fn a_backup_of_a_node_at_work_restores_its_history_and_resuming_never_skips() {
    let node_dir = tempfile::tempdir().unwrap();
    let mut node = Server::start_in(node_dir.path(), &[]).await;
    for n in 0..20 {
        node.post_message("calm", json!(n)).await;
    }
    let epoch = node.post_message("busy", json!("first")).await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    // A publisher keeps the node writing while the backup is taken.
    let stop = CancellationToken::new();
    let writer = {
        let (addr, stop) = (node.addr, stop.clone());
        tokio::spawn(async move {
            let mut sent = 0;
            while !stop.is_cancelled() {
                let body = json!({"message": sent, "room": "busy"}).to_string();
                let answer =
                    crate::support::http(addr, "POST", "/chat/send/", Some(body.as_bytes()), &[])
                        .await;
                assert_eq!(answer.status, 200, "{answer:?}");
                sent += 1;
            }
            sent
        })
    };
    eventually("the publisher at work", || async {
        node.history("?room=busy&limit=5").await.len() >= 5
    })
    .await;
    let saved = tempfile::tempdir().unwrap();
    let backup = saved.path().join("backup.sqlite3");
    let (ok, said) = livechat(&[
        "backup",
        "--data-dir",
        node_dir.path().to_str().unwrap(),
        "--to",
        backup.to_str().unwrap(),
    ])
    .await;
    assert!(ok, "{said}");
    assert!(
        said.contains("rooms") && said.contains("messages"),
        "{said}"
    );
    // Some messages are stored after the backup: the restore will not have them.
    eventually("messages after the backup", || async {
        let (busy_in_backup, _) = backup_numbering(&backup, "busy");
        node.history("?room=busy&limit=1").await[0]["id"]
            .as_u64()
            .unwrap()
            > busy_in_backup + 3
    })
    .await;
    stop.cancel();
    assert!(writer.await.unwrap() > 0);
    let (in_backup, backup_epoch) = backup_numbering(&backup, "busy");
    assert_eq!(backup_epoch, epoch);
    let before = node.history("?room=busy&limit=10000").await;
    let seen_last = ids(&before).last().copied().unwrap();
    let calm_before = node.history("?room=calm").await;
    node.stop().await;
    assert_eq!(integrity(&backup), "ok");

    let fresh = tempfile::tempdir().unwrap();
    let data = fresh.path().join("data");
    let restore = [
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let (ok, said) = livechat(&restore).await;
    assert!(ok, "{said}");
    let (again, said) = livechat(&restore).await;
    assert!(!again && said.contains("fresh data directory"), "{said}");
    let restored = Server::start_in(&data, &[]).await;
    // The same history and ids, up to the backup's last commit, without a hole.
    assert_eq!(restored.history("?room=calm").await, calm_before);
    let after = restored.history("?room=busy&limit=10000").await;
    assert_eq!(ids(&after), (1..=in_backup).collect::<Vec<_>>());
    assert_eq!(after[..], before[..in_backup as usize]);

    // A client of the old node within the backup gets what it missed, then goes on in the
    // restored history's epoch.
    let since = in_backup - 3;
    let mut client = restored
        .connect(&format!(
            "/ws/chat/busy/?meta=1&since={since}&epoch={epoch}"
        ))
        .await;
    let (frames, caught_up) = until_caught_up(&mut client).await;
    assert_eq!(ids(&frames), [since + 1, since + 2, since + 3]);
    let new_epoch = caught_up["epoch"].as_str().unwrap().to_owned();
    assert_ne!(new_epoch, epoch);
    // Published after the restore: numbered on from the backup, in the new epoch.
    let next = restored
        .post_message("busy", json!("after the restore"))
        .await;
    assert_eq!(next["id"], in_backup + 1);
    assert_eq!(next["epoch"], new_epoch);
    // A client that saw messages the backup does not have is told to start again, even once the
    // restored history has ids as high as its own.
    while restored.history("?room=busy&limit=1").await[0]["id"]
        .as_u64()
        .unwrap()
        < seen_last
    {
        restored.post_message("busy", json!("more")).await;
    }
    let mut lost = restored
        .connect(&format!(
            "/ws/chat/busy/?meta=1&since={seen_last}&epoch={epoch}"
        ))
        .await;
    let (frames, _) = until_caught_up(&mut lost).await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["event"], "reset");
    assert_eq!(frames[0]["epoch"], new_epoch);
}

/// Leaves `stream` with its first `kept` entries only, as a migration stopped there would.
fn interrupt_after(url: &str, stream: &str, kept: usize) {
    let mut redis = redis::Client::open(url)
        .and_then(|client| client.get_connection())
        .expect("connect to Redis");
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query(&mut redis)
        .expect("XRANGE");
    redis::cmd("DEL").arg(stream).exec(&mut redis).expect("DEL");
    for entry in entries.ids.iter().take(kept) {
        let mut add = redis::cmd("XADD");
        add.arg(stream).arg(&entry.id);
        for (field, value) in &entry.map {
            add.arg(field)
                .arg(redis::from_redis_value_ref::<String>(value).unwrap());
        }
        add.exec(&mut redis).expect("XADD");
    }
}

/// A room's last id in a backup file, and the file's epoch.
fn backup_numbering(file: &Path, room: &str) -> (u64, String) {
    let connection =
        rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let last: i64 = connection
        .query_row("SELECT last_id FROM rooms WHERE room = ?1", [room], |row| {
            row.get(0)
        })
        .unwrap();
    let epoch: String = connection
        .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |row| {
            row.get(0)
        })
        .unwrap();
    (last as u64, epoch)
}

const KEY: &str = "operations-key";

#[tokio::test]
async fn migrating_to_redis_keeps_history_ids_and_resumes_and_is_idempotent() {
    let node_dir = tempfile::tempdir().unwrap();
    let args = ["--api-key", KEY];
    let mut node = Server::start_in(node_dir.path(), &args).await;
    // Ann publishes with a name (auth is off); the server key moderates.
    let post = |room: &'static str, body: Value| {
        let addr = node.addr;
        async move {
            let body = json!({"message": body, "room": room}).to_string();
            crate::support::http(
                addr,
                "POST",
                "/chat/send/?name=ann",
                Some(body.as_bytes()),
                &[],
            )
            .await
        }
    };
    for room in ["alpha", "beta"] {
        for n in 0..30 {
            let answer = post(room, json!(format!("{room} {n}"))).await;
            assert_eq!(answer.status, 200, "{answer:?}");
        }
    }
    // A nonce still in its window, an edit, a deletion, a reaction, a read position, a ban.
    let with_nonce = |server: &Server| {
        let body = json!({"message": "once", "room": "alpha", "nonce": "migrated-nonce"});
        let addr = server.addr;
        async move {
            let body = body.to_string();
            crate::support::http(addr, "POST", "/chat/send/", Some(body.as_bytes()), &[])
                .await
                .json()
        }
    };
    let first = with_nonce(&node).await;
    let edited = node
        .call(
            KEY,
            "PATCH",
            "/chat/history/alpha/3",
            Some(json!({"message": "alpha 2, edited"})),
        )
        .await;
    assert_eq!(edited.status, 200, "{edited:?}");
    let deleted = node
        .call(KEY, "DELETE", "/chat/history/alpha/4", None)
        .await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    let mut ann = node.connect("/ws/chat/beta/?name=ann&meta=1").await;
    ann.send_json(json!({"react": 5, "emoji": "👍"})).await;
    let reaction = ann.recv().await;
    assert_eq!(reaction["event"], "reaction", "{reaction}");
    let body = json!({"room": "beta", "id": 7}).to_string();
    let read = crate::support::http(
        node.addr,
        "POST",
        "/chat/read/?name=ann",
        Some(body.as_bytes()),
        &[],
    )
    .await;
    assert_eq!(read.status, 200, "{read:?}");
    let banned = node
        .call(
            KEY,
            "POST",
            "/api/bans",
            Some(json!({"user": "troll", "reason": "spam"})),
        )
        .await;
    assert_eq!(banned.status, 201, "{banned:?}");
    // Where a client stops; then it misses a few.
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    let seen = first["id"].as_u64().unwrap();
    for n in 0..4 {
        post("alpha", json!(format!("missed {n}"))).await;
    }
    let history = |server: &Server, room: &'static str| {
        let addr = server.addr;
        async move {
            let path = format!("/chat/history/?room={room}&limit=1000&name=ann");
            crate::support::http(addr, "GET", &path, None, &[])
                .await
                .json()
        }
    };
    let unread = |server: &Server| {
        let addr = server.addr;
        async move {
            let mut answer = crate::support::http(addr, "GET", "/chat/unread/?name=ann", None, &[])
                .await
                .json();
            // In room order: the engines list them in their own.
            if let Some(rooms) = answer["rooms"].as_array_mut() {
                rooms.sort_by_key(|room| room["room"].to_string());
            }
            answer
        }
    };
    let alpha = history(&node, "alpha").await;
    let beta = history(&node, "beta").await;
    let bans = node.call(KEY, "GET", "/api/bans", None).await.json();
    let unread_before = unread(&node).await;
    node.stop().await;

    let redis = RedisServer::start().await;
    let data_dir = node_dir.path().to_str().unwrap().to_owned();
    let url = redis.url();
    let migrate = ["migrate", "--data-dir", &data_dir, "--to", &url];
    let (ok, said) = livechat(&migrate).await;
    assert!(ok, "{said}");
    assert!(
        said.contains("rooms 2/2"),
        "progress on the terminal: {said}"
    );
    let keys_once = redis.cli(&["--scan"]).await;
    // Interrupted half-way through a room (its stream holds its first 19 messages, as a run
    // stopped there leaves it): a second run adds only what is missing.
    interrupt_after(&url, "livechat:{beta}:history", 19);
    let (ok, said) = livechat(&migrate).await;
    assert!(ok && said.contains("(11 added)"), "{said}");
    let (ok, said) = livechat(&migrate).await;
    assert!(
        ok && said.contains("(0 added)"),
        "run twice, the same: {said}"
    );
    let mut keys_again = redis
        .cli(&["--scan"])
        .await
        .lines()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let mut keys_once = keys_once.lines().map(str::to_owned).collect::<Vec<_>>();
    keys_again.sort();
    keys_once.sort();
    assert_eq!(keys_again, keys_once);

    let on_redis = Server::node(&redis, &args).await;
    assert_eq!(history(&on_redis, "alpha").await, alpha);
    assert_eq!(history(&on_redis, "beta").await, beta);
    assert_eq!(
        on_redis.call(KEY, "GET", "/api/bans", None).await.json(),
        bans
    );
    assert_eq!(unread(&on_redis).await, unread_before);
    // The client resuming with its old id gets exactly what it missed.
    let mut client = on_redis
        .connect(&format!(
            "/ws/chat/alpha/?meta=1&since={seen}&epoch={epoch}"
        ))
        .await;
    let (frames, caught_up) = until_caught_up(&mut client).await;
    // First the messages it had that changed since (the edit and the deletion came after it
    // saw its last message), then those it missed.
    assert_eq!(frames[0]["event"], "edited");
    assert_eq!(frames[1]["event"], "deleted");
    assert_eq!(ids(&frames), [3, 4, seen + 1, seen + 2, seen + 3, seen + 4]);
    assert_eq!(caught_up["epoch"], epoch.as_str());
    // The nonce is still remembered; new messages are numbered on.
    let again = with_nonce(&on_redis).await;
    assert_eq!(again["id"], first["id"]);
    let next = on_redis.post_message("alpha", json!("on Redis")).await;
    assert_eq!(next["id"], seen + 5);
    assert_eq!(next["epoch"], epoch.as_str());
    assert_eq!(client.recv().await["id"], seen + 5);
}

#[tokio::test]
async fn migrating_to_a_redis_cluster_serves_the_same_history() {
    let node_dir = tempfile::tempdir().unwrap();
    let mut node = Server::start_in(node_dir.path(), &[]).await;
    let mut last = Value::Null;
    for room in ["north", "south", "east", "west"] {
        for n in 0..10 {
            last = node.post_message(room, json!(format!("{room} {n}"))).await;
        }
    }
    let mut before = Vec::new();
    for room in ["north", "south", "east", "west"] {
        before.push(node.history(&format!("?room={room}")).await);
    }
    node.stop().await;

    let cluster = crate::support::RedisCluster::start().await;
    let urls = cluster.urls();
    let data_dir = node_dir.path().to_str().unwrap();
    let (ok, said) = livechat(&[
        "migrate",
        "--data-dir",
        data_dir,
        "--to",
        &urls,
        "--cluster",
    ])
    .await;
    assert!(ok && said.contains("rooms 4/4"), "{said}");
    let on_cluster = Server::start_in(
        node_dir.path().join("unused").as_path(),
        &["--redis-cluster", "--redis-url", &urls],
    )
    .await;
    for (room, history) in ["north", "south", "east", "west"].iter().zip(before) {
        assert_eq!(on_cluster.history(&format!("?room={room}")).await, history);
    }
    let next = on_cluster
        .post_message("west", json!("on the cluster"))
        .await;
    assert_eq!(next["id"], 11);
    assert_eq!(next["epoch"], last["epoch"]);
}
