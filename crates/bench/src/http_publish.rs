//! `http-publish`: `POST /chat/send/` over keep-alive connections as fast as answers come back.
//! Measures requests/s, non-200 answers and latency. A connection that cannot be opened, or that
//! breaks, is counted (`connection_errors`) and the others go on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BenchError;
use crate::client::Target;
use crate::report::{Summary, export, failures, histogram, import, latency_json};
use crate::workers::{self, Slice};

#[derive(Debug, Clone, clap::Args)]
pub struct HttpPublish {
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    #[arg(long, value_parser = crate::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Size of each message's JSON value in bytes (padded).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    #[arg(long, default_value = "bench_http")]
    pub room: String,
    /// Path of the publish endpoint.
    #[arg(long, default_value = "/chat/send/")]
    pub send_path: String,
}

/// What one process measured.
#[derive(Serialize, Deserialize)]
pub struct Raw {
    latency: Vec<(u64, u64)>,
    ok: u64,
    failed: u64,
    connection_errors: u64,
    first_error: Option<String>,
    seconds: f64,
}

pub async fn run(
    options: &HttpPublish,
    target: Arc<Target>,
    slice: Slice,
) -> Result<Raw, BenchError> {
    let message = "x".repeat(options.size.saturating_sub(2));
    let body = json!({ "message": message, "room": options.room }).to_string();
    let request: Arc<[u8]> = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        options.send_path,
        target.host,
        body.len()
    )
    .into_bytes()
    .into();
    let mut streams = Vec::new();
    let (mut connection_errors, mut first_error) = (0, None);
    for _ in 0..slice.share(options.connections) {
        match target.tcp().await {
            Ok(stream) => streams.push(stream),
            Err(error) => {
                connection_errors += 1;
                first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    workers::start_line(slice).await?;
    let started = Instant::now();
    let end = started + options.duration;
    let posting: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(post_until(stream, request.clone(), end)))
        .collect();
    let mut latency = histogram();
    let (mut ok, mut failed) = (0, 0);
    for worker in posting {
        let posted = worker.await.map_err(BenchError::from)?;
        latency
            .add(&posted.latency)
            .map_err(|e| BenchError::Report(e.to_string()))?;
        ok += posted.ok;
        failed += posted.failed;
        if let Some(error) = posted.error {
            connection_errors += 1;
            first_error.get_or_insert_with(|| error.to_string());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    workers::end_line(slice);
    Ok(Raw {
        latency: export(&latency),
        ok,
        failed,
        connection_errors,
        first_error,
        seconds,
    })
}

pub fn report(options: &HttpPublish, raws: &[Raw]) -> Summary {
    let mut latency = histogram();
    for raw in raws {
        import(&mut latency, &raw.latency);
    }
    let requests: u64 = raws.iter().map(|raw| raw.ok + raw.failed).sum();
    let seconds = raws.iter().map(|raw| raw.seconds).fold(0.0, f64::max);
    let parameters = json!({
        "connections": options.connections, "duration_s": options.duration.as_secs_f64(),
        "size": options.size, "workers": raws.len(),
    });
    let mut results = Map::new();
    results.insert("requests".into(), json!(requests));
    results.insert("requests_per_s".into(), json!(requests as f64 / seconds));
    let non_200: u64 = raws.iter().map(|raw| raw.failed).sum();
    results.insert("non_200".into(), json!(non_200));
    let connection_errors: u64 = raws.iter().map(|raw| raw.connection_errors).sum();
    results.insert("connection_errors".into(), json!(connection_errors));
    results.insert("latency".into(), latency_json(&latency));
    let first_error = raws.iter().find_map(|raw| raw.first_error.as_deref());
    let failure = (requests == non_200).then(|| {
        format!(
            "no request was answered 200 ({non_200} answered otherwise; connections: {})",
            failures(connection_errors, first_error)
        )
    });
    Summary {
        parameters,
        results,
        failure,
    }
}

/// What one connection did: its answers, and the error that ended it early, if one did.
struct Posted {
    latency: hdrhistogram::Histogram<u64>,
    ok: u64,
    failed: u64,
    error: Option<BenchError>,
}

async fn post_until(mut stream: TcpStream, request: Arc<[u8]>, end: Instant) -> Posted {
    let mut posted = Posted {
        latency: histogram(),
        ok: 0,
        failed: 0,
        error: None,
    };
    let mut buffer = Vec::with_capacity(4096);
    while Instant::now() < end {
        let sent = Instant::now();
        let answer = match stream.write_all(&request).await {
            Ok(()) => read_answer(&mut stream, &mut buffer).await,
            Err(error) => Err(error.into()),
        };
        let status = match answer {
            Ok(status) => status,
            Err(error) => {
                posted.error = Some(error);
                break;
            }
        };
        let took = (sent.elapsed().as_micros() as u64).max(1);
        posted.latency.saturating_record(took);
        if status == 200 {
            posted.ok += 1
        } else {
            posted.failed += 1
        }
    }
    posted
}

/// Reads one HTTP/1.1 answer (Content-Length framed) and returns its status code.
async fn read_answer(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<u16, BenchError> {
    buffer.clear();
    loop {
        if let Some(head_end) = find(buffer, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..head_end])
                .map_err(|_| BenchError::Http("bad head".into()))?;
            let status = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| BenchError::Http(head.to_owned()))?;
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buffer.len() < head_end + 4 + length {
                read_more(stream, buffer).await?;
            }
            return Ok(status);
        }
        read_more(stream, buffer).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(), BenchError> {
    let mut chunk = [0u8; 4096];
    let read = stream.read(&mut chunk).await?;
    if read == 0 {
        return Err(BenchError::Http("connection closed".into()));
    }
    buffer.extend_from_slice(&chunk[..read]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
