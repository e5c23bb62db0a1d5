//! Several load processes: with `--workers N` the parent starts N copies of itself, each taking a
//! slice of the scenario's connections (one process may hold about 19,900 open files here). Each
//! worker opens its connections, says `ready`, waits for `go` (so that the load starts everywhere
//! at once, after every connection is open), runs, says `done` when its load is over, and prints
//! its raw result and its own CPU time as one JSON line; the parent merges them into one report.

use std::process::Stdio;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::{BenchError, cpu};

const READY: &str = "worker-ready";
const GO: &str = "go";
const DONE: &str = "worker-done";
const RESULT: &str = "worker-result ";

/// Which part of the work this process does.
#[derive(Debug, Clone, Copy)]
pub struct Slice {
    pub index: usize,
    pub count: usize,
}

impl Slice {
    pub const WHOLE: Slice = Slice { index: 0, count: 1 };

    /// This slice's share of `total` items.
    pub fn share(&self, total: usize) -> usize {
        total / self.count + usize::from(self.index < total % self.count)
    }

    /// Whether this slice holds the single things (the publishers of a fan-out).
    pub fn leads(&self) -> bool {
        self.index == 0
    }

    pub fn is_worker(&self) -> bool {
        self.count > 1
    }
}

/// Where the load starts: at once alone, or on the parent's word as a worker.
pub async fn start_line(slice: Slice) -> Result<(), BenchError> {
    if !slice.is_worker() {
        cpu::mark_start();
        return Ok(());
    }
    println!("{READY}");
    let mut line = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await?;
    if line.trim() == GO {
        Ok(())
    } else {
        Err(BenchError::Report("the parent process went away".into()))
    }
}

/// Where the measured part of the load ends (what follows is closing connections).
pub fn end_line(slice: Slice) {
    if slice.is_worker() {
        println!("{DONE}");
    } else {
        cpu::mark_end();
    }
}

/// What a worker hands in: its raw result and the CPU seconds it used.
#[derive(Serialize, Deserialize)]
struct HandedIn<R> {
    raw: R,
    cpu_s: f64,
}

/// Prints a worker's raw result for the parent.
pub fn hand_in<R: Serialize>(raw: &R) -> Result<(), BenchError> {
    let handed = HandedIn {
        raw,
        cpu_s: cpu::own_seconds(),
    };
    let json = serde_json::to_string(&handed).map_err(|e| BenchError::Report(e.to_string()))?;
    println!("{RESULT}{json}");
    Ok(())
}

/// What the workers did: their raw results, and the CPU seconds they used together.
pub struct Gathered<R> {
    pub raws: Vec<R>,
    pub cpu_s: f64,
}

/// Starts `count` workers (this program, same arguments, plus `--worker-slice I`), waits until
/// every one is ready, runs `when_ready`, lets them go and collects their raw results.
pub async fn run<R, Ready>(count: usize, when_ready: Ready) -> Result<Gathered<R>, BenchError>
where
    R: DeserializeOwned,
    Ready: std::future::Future<Output = ()>,
{
    let program = std::env::current_exe()?;
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let mut workers = Vec::new();
    for index in 0..count {
        let mut child = Command::new(&program)
            .args(["--worker-slice", &index.to_string()])
            .args(&arguments)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        workers.push((child, BufReader::new(stdout).lines()));
    }
    for (_, lines) in &mut workers {
        expect_line(lines, |line| line == READY).await?;
    }
    cpu::mark_start();
    when_ready.await;
    for (child, _) in &mut workers {
        if let Some(stdin) = child.stdin.as_mut() {
            stdin.write_all(format!("{GO}\n").as_bytes()).await?;
        }
    }
    for (_, lines) in &mut workers {
        expect_line(lines, |line| line == DONE).await?;
    }
    cpu::mark_end();
    let (mut raws, mut cpu_s) = (Vec::new(), 0.0);
    for (mut child, mut lines) in workers {
        let line = expect_line(&mut lines, |line| line.starts_with(RESULT)).await?;
        let handed: HandedIn<R> = serde_json::from_str(&line[RESULT.len()..])
            .map_err(|e| BenchError::Report(format!("worker result: {e}")))?;
        raws.push(handed.raw);
        cpu_s += handed.cpu_s;
        let _ = child.wait().await;
    }
    Ok(Gathered { raws, cpu_s })
}

async fn expect_line<L>(
    lines: &mut tokio::io::Lines<L>,
    wanted: impl Fn(&str) -> bool,
) -> Result<String, BenchError>
where
    L: tokio::io::AsyncBufRead + Unpin,
{
    while let Some(line) = lines.next_line().await? {
        if wanted(&line) {
            return Ok(line);
        }
    }
    Err(BenchError::Report(
        "a worker ended early (see its error above)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::Slice;

    #[test]
    fn shares_add_up() {
        let shares: Vec<usize> = (0..3)
            .map(|index| Slice { index, count: 3 }.share(10))
            .collect();
        assert_eq!(shares, [4, 3, 3]);
        assert_eq!(Slice::WHOLE.share(7), 7);
    }
}
